"""The preference-model kinds by name: ``scorer.kind`` / ``train_pm kind=`` select one."""

from __future__ import annotations

from torch import nn

from selfplay.core.lm import ModelTrust
from selfplay.models import KINDS
from selfplay.models.backbone import PreferenceModel
from selfplay.models.gpm import GPM
from selfplay.models.multi_objective import MultiObjectiveRewardModel
from selfplay.models.pairrm import load_pairrm
from selfplay.models.pairwise import PairwiseModel
from selfplay.models.reward import RewardModel


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown preference-model kind '{kind}'; expected one of {KINDS}")


def new_preference_model(
    kind: str, backbone: nn.Module, k: int = 2, gate: bool = True, tau: float = 0.1,
    attributes: list[str] | None = None,
) -> PreferenceModel:
    """A fresh model of ``kind`` on ``backbone`` (k, gate and tau apply to the GPM only, attributes to
    multi_objective only, which requires them)."""
    _check(kind)
    if kind == "pairrm":
        raise ValueError("kind 'pairrm' is a published judge, loaded from its checkpoint (load_preference_model); "
                         "selfplay does not build or train one")
    if kind == "gpm":
        return GPM(backbone, k=k, gate=gate, tau=tau)
    if kind == "multi_objective":
        if not attributes:
            raise ValueError("kind 'multi_objective' needs its attribute names: new_preference_model(..., attributes=[...])")
        return MultiObjectiveRewardModel(backbone, attributes)
    return PairwiseModel(backbone) if kind == "pairwise" else RewardModel(backbone)


def load_preference_model(kind: str, name: str, k: int | None = None, tau: float | None = None,
                          trust: ModelTrust = ModelTrust()) -> PreferenceModel:
    """Load a checkpoint of ``kind``; one saved as another kind, or with other head shapes, is refused.
    ``trust``: what loading it may do besides reading safetensors (``scorer.trust_remote_code`` / ``allow_pickle``)."""
    _check(kind)
    if kind == "gpm":
        return GPM.from_pretrained(name, k=k, tau=tau, trust=trust)
    if kind == "pairrm":  # its tokenizer and source text: selfplay.models.scorer.load_scorer
        return load_pairrm(name, trust=trust)[0]
    loader = {"bt": RewardModel, "pairwise": PairwiseModel, "multi_objective": MultiObjectiveRewardModel}[kind]
    return loader.from_pretrained(name, trust)
