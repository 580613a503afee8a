"""The preference-model kinds by name: ``scorer.kind`` / ``train_pm kind=`` select one."""

from __future__ import annotations

from torch import nn

from selfplay.models.backbone import PreferenceModel
from selfplay.models.gpm import GPM
from selfplay.models.pairwise import PairwiseModel
from selfplay.models.reward import RewardModel

KINDS = ("gpm", "bt", "pairwise")


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown preference-model kind '{kind}'; expected one of {KINDS}")


def new_preference_model(kind: str, backbone: nn.Module, k: int = 2, gate: bool = True, tau: float = 0.1) -> PreferenceModel:
    """A fresh model of ``kind`` on ``backbone`` (k, gate and tau apply to the GPM only)."""
    _check(kind)
    if kind == "gpm":
        return GPM(backbone, k=k, gate=gate, tau=tau)
    return PairwiseModel(backbone) if kind == "pairwise" else RewardModel(backbone)


def load_preference_model(kind: str, name: str, k: int | None = None, tau: float | None = None) -> PreferenceModel:
    """Load a checkpoint of ``kind``; one saved as another kind, or with other head shapes, is refused."""
    _check(kind)
    if kind == "gpm":
        return GPM.from_pretrained(name, k=k, tau=tau)
    return (PairwiseModel if kind == "pairwise" else RewardModel).from_pretrained(name)
