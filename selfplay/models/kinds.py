"""The preference-model kinds by name: ``scorer.kind`` / ``train_pm kind=`` select one."""

from __future__ import annotations

import torch
from torch import nn

from selfplay.core.lm import ModelLoadError, ModelTrust
from selfplay.models import DIRECTIONAL_KINDS, KINDS
from selfplay.models.armorm import DEFAULT_ATTRIBUTES, ArmoRM, objective_names
from selfplay.models.backbone import PreferenceModel
from selfplay.models.gpm import GPM
from selfplay.models.multi_objective import MultiObjectiveRewardModel, Selection, config_attributes, select_attributes
from selfplay.models.pairrm import PairRM, load_pairrm
from selfplay.models.pairwise import PairwiseModel
from selfplay.models.reward import RewardModel

LOADERS: dict[str, type[PreferenceModel]] = {"gpm": GPM, "bt": RewardModel, "pairwise": PairwiseModel,
                                             "multi_objective": MultiObjectiveRewardModel, "armorm": ArmoRM,
                                             "pairrm": PairRM}
BACKBONE_PREFIXES = ("model.", "pretrained_model.")  # ours, the GPM's and ArmoRM's; PairRM's
MAX_NAMED = 12  # head tensors a refusal lists


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown preference-model kind '{kind}'; expected one of {KINDS}")


def new_preference_model(
    kind: str, backbone: nn.Module, k: int = 2, gate: bool = True, tau: float = 0.1,
    attributes: list[str] | None = None,
) -> PreferenceModel:
    """A fresh model of ``kind`` on ``backbone`` (k, gate and tau apply to the GPM only, attributes to
    multi_objective only, which requires them).  ArmoRM is read from its checkpoint, never made fresh."""
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
    if kind == "armorm":
        raise ValueError("kind 'armorm' is ArmoRM's published checkpoint, read with load_preference_model; "
                         "it is not trained here")
    return PairwiseModel(backbone) if kind == "pairwise" else RewardModel(backbone)


def load_preference_model(kind: str, name: str, k: int | None = None, tau: float | None = None,
                          trust: ModelTrust = ModelTrust(), dtype: torch.dtype = torch.float32,
                          attributes: Selection = None) -> PreferenceModel:
    """Load a checkpoint of ``kind`` in ``dtype`` (``scorer.dtype``); one saved as another kind, or with other head
    shapes, is refused.  ``trust``: what loading it may do besides reading safetensors (``scorer.trust_remote_code``
    / ``allow_pickle``); ``attributes``: the objectives a multi-objective model scores (``scorer.attributes``)."""
    _check(kind)
    if kind == "gpm":
        return GPM.from_pretrained(name, k=k, tau=tau, trust=trust, dtype=dtype)
    if kind == "pairrm":  # its tokenizer and source text: selfplay.models.preference_scorer.load_scorer
        return load_pairrm(name, trust=trust, dtype=dtype)[0]
    if kind in DIRECTIONAL_KINDS:
        return LOADERS[kind].from_pretrained(name, trust, dtype=dtype, attributes=attributes)
    return LOADERS[kind].from_pretrained(name, trust, dtype=dtype)


def head_problem(kind: str, tensors: dict[str, list[int]]) -> str | None:
    """What a checkpoint with ``tensors`` (name -> shape) lacks for ``kind``'s loader, or None."""
    return LOADERS[kind].head_problem(tensors)


def check_heads(kind: str, name: str, tensors: dict[str, list[int]]) -> None:
    """Refuse, in one line naming the head tensors found, a checkpoint whose heads ``kind`` cannot read; name the
    kinds that can."""
    _check(kind)
    problem = head_problem(kind, tensors)
    if problem is None:
        return
    heads = sorted(t for t in tensors if not t.startswith(BACKBONE_PREFIXES))
    found = ", ".join(f"{t} {list(tensors[t])}" for t in heads[:MAX_NAMED]) + (
        f" and {len(heads) - MAX_NAMED} more" if len(heads) > MAX_NAMED else "")
    readers = [k for k in KINDS if k != kind and head_problem(k, tensors) is None]
    hint = f"; scorer.kind={' or '.join(readers)} reads this layout" if readers else ""
    raise ModelLoadError(f"scorer model '{name}' {problem}: not a '{kind}' checkpoint (besides the backbone's "
                         f"{' / '.join(p + '*' for p in BACKBONE_PREFIXES)} it holds {found or 'nothing'}){hint}")


def attribute_names(name: str, kind: str = "multi_objective", selection: Selection = None,
                    trust_remote_code: bool = False) -> list[str]:
    """The scored attribute names of the ``kind`` reward model ``name`` from its config alone (no weights):
    ``selection`` (``scorer.attributes``) over its outputs, named by ``id2label`` in index order (``LABEL_i`` where
    the config names none) or, for ArmoRM, by its model card."""
    from transformers import AutoConfig

    from selfplay.core.lm import resolve

    try:
        config = AutoConfig.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"scorer model '{name}': cannot read its config ({e})") from None
    if kind == "armorm":
        names = objective_names(getattr(config, "num_objectives", 19))
        return list(select_attributes(DEFAULT_ATTRIBUTES if selection is None else selection, names, name))
    return list(select_attributes(selection, config_attributes(config, config.num_labels, name), name))
