"""Preference models.  The kinds by name live here, where importing them costs no torch (the config checks them)."""

PAIR_KINDS = ("gpm", "bt", "pairwise")  # trained on pairs; score K x K matrices on their own
# multi_objective: trained on attribute labels; scores pairs only along a direction over its attributes.
# armorm: ArmoRM's published checkpoint, read natively: objectives for directions, or its gated scalar score.
DIRECTIONAL_KINDS = ("multi_objective", "armorm")
KINDS = (*PAIR_KINDS, *DIRECTIONAL_KINDS)
TRAINED_KINDS = (*PAIR_KINDS, "multi_objective")  # what selfplay.train_pm can train (ArmoRM is read, not trained)
