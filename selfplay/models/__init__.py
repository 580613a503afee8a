"""Preference models.  The kinds by name live here, where importing them costs no torch (the config checks them)."""

PAIR_KINDS = ("gpm", "bt", "pairwise")  # trained on pairs; score K x K matrices on their own
# multi_objective: trained on attribute labels; scores pairs only along a direction over its attributes
KINDS = (*PAIR_KINDS, "multi_objective")
