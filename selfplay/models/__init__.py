"""Preference models.  The kinds by name live here, where importing them costs no torch (the config checks them)."""

PAIR_KINDS = ("gpm", "bt", "pairwise")  # trained on pairs; score K x K matrices on their own
# multi_objective: trained on attribute labels; scores pairs only along a direction over its attributes.
# armorm: ArmoRM's published checkpoint, read natively: objectives for directions, or its gated scalar score.
# pairrm: a published judge (llm-blender/PairRM) loaded as it is: scores K x K matrices, never trained here.
DIRECTIONAL_KINDS = ("multi_objective", "armorm")
KINDS = (*PAIR_KINDS, *DIRECTIONAL_KINDS, "pairrm")
TRAINED_KINDS = (*PAIR_KINDS, "multi_objective")  # what selfplay.train_pm can train (ArmoRM, PairRM: read only)
PAIRRM_SOURCES = ("template", "last_turn")  # scorer.source: the text PairRM reads as the source (pairrm.py)
AGGREGATES = ("none", "sppo")  # scorer.aggregate: a kind's own matrix, or SPPO's K-way aggregation of it


def judge_dtype(name: str, device: str) -> str:
    """The dtype a judge is served in for ``scorer.dtype`` ``name`` on ``device``: ``auto`` is bfloat16 on a GPU (the
    precision judges are published in) and float32 on the CPU; any other name stands.  The loaders and the memory
    plan both read it here."""
    if name != "auto":
        return name
    return "bfloat16" if device.startswith("cuda") else "float32"
