"""Multi-objective reward model, docs/methods.md §2.3 ([DPA] sec. 2.1): m named attributes, one regression head.

    r(x, y) = W h_last(x, y)  in R^m,   W [m, hidden], no bias,
    loss = sum over observed (row, attribute) of (r_a - label_a)^2 / #observed   (``losses.masked_mse_loss``)

Rewards are on the labels' scale, 0-100 per attribute (``selfplay.data.attributes.rescale``).  A scalar
preference needs a direction v over the attributes, S[i, j] = v^T (r_i - r_j) / tau, which the
self-play loop applies; so unlike the other kinds this model offers no score matrix and no pair loss
of its own, only the attribute rewards.

The checkpoint is Hugging Face's sequence-classification layout, like the BT model's: ``model.*`` +
``score.weight`` [m, hidden], config ``num_labels = m``, ``problem_type = "regression"`` and the
attribute names in ``id2label``.  So ours loads as ``AutoModelForSequenceClassification`` (its logits
are our rewards), and a published multi-objective RM in that layout loads here, its attribute names
read from its config.  There is no bias to hold the labels' mean of about 50: see
``selfplay.models.training`` for how training gets there anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from selfplay.core.lm import Messages, ModelLoadError, ModelTrust
from selfplay.models.backbone import backbone_from_state
from selfplay.models.reward import RewardModel, read_reward_checkpoint

NEEDS_DIRECTION = (
    "a multi-objective reward model scores pairs only along a direction v over its attributes "
    "(S = v^T (r_i - r_j) / tau), which the self-play loop applies; use attribute_rewards for the (K, m) rewards"
)


class MultiObjectiveRewardModel(RewardModel):
    """A backbone with a bias-free regression head of one output per named attribute."""

    kind = "multi_objective"
    kind_required = False  # a published multi-objective RM has no meta file: its layout and config say enough
    outputs = None  # m >= 1 rows of score.weight

    def __init__(self, backbone: nn.Module, attributes: list[str]):
        if not attributes:
            raise ValueError("a multi-objective reward model needs at least one attribute name")
        if len(set(attributes)) != len(attributes):
            raise ValueError(f"attribute names must be distinct, got {attributes}")
        super().__init__(backbone, num_labels=len(attributes))
        self.attributes = list(attributes)
        self.scored = dict(zip(attributes, range(len(attributes))))  # what attribute_rewards returns: name -> row

    # forward: RewardModel's, rewards (B, m) at the last non-pad token.

    @torch.no_grad()
    def attribute_rewards(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]], batch_size: int
    ) -> list[torch.Tensor]:
        """One (K_p, m) float tensor of rewards on the CPU per prompt, one column per ``self.scored`` attribute
        (all of ``self.attributes`` unless ``scorer.attributes`` selects some)."""
        r = self.rewards(tokenizer, prompts, responses, batch_size)[:, list(self.scored.values())].cpu()
        return list(torch.split(r, [len(group) for group in responses]))

    def pair_logits(self, tokenizer: PreTrainedTokenizerBase, pairs: list) -> torch.Tensor:
        raise ValueError(f"pair_logits: {NEEDS_DIRECTION}")

    def score_matrices(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list, responses: list[list[str]], batch_size: int
    ) -> list[torch.Tensor]:
        raise ValueError(f"score_matrices: {NEEDS_DIRECTION}")

    def head_config(self) -> PretrainedConfig:
        """The sequence-classification config of RewardModel, plus regression and the attribute names."""
        config = super().head_config()
        config.problem_type = "regression"
        config.id2label = dict(enumerate(self.attributes))
        config.label2id = {name: i for i, name in enumerate(self.attributes)}
        return config

    @classmethod
    def from_pretrained(cls, name: str, trust: ModelTrust = ModelTrust(), dtype: torch.dtype = torch.float32,
                        attributes: Selection = None) -> MultiObjectiveRewardModel:
        """Any sequence-classification checkpoint with a ``score.weight`` of m >= 1 rows; the attribute
        names are its config's ``id2label`` in index order (``LABEL_i`` where the config names none), of which
        ``attributes`` (``scorer.attributes``) selects the scored ones."""
        path, state = read_reward_checkpoint(name, cls.kind, cls.kind_required, trust.allow_pickle)
        rows = state["score.weight"].shape[0]
        backbone = backbone_from_state(path, state, "scorer model", trust.trust_remote_code, dtype)
        model = cls(backbone, attributes=config_attributes(backbone.config, rows, name))
        model.score.weight.data.copy_(state["score.weight"])
        model.scored = select_attributes(attributes, model.attributes, name)
        return model.to(dtype)


Selection = Mapping[str, int] | Sequence[str] | None  # scorer.attributes


def select_attributes(selection: Selection, names: Sequence[str], model: str) -> dict[str, int]:
    """The scored attributes of a model whose rows are named ``names``, as name -> row: every row under its own
    name (``selection`` None), the rows a mapping names under its names (``{helpfulness: 0, verbosity: 4}``),
    or the rows of a list of the model's names."""
    if selection is None:
        return {n: i for i, n in enumerate(names)}
    if isinstance(selection, Mapping):
        chosen = {str(n): row for n, row in selection.items()}
        outside = [f"{n}: {row}" for n, row in chosen.items() if not (isinstance(row, int) and 0 <= row < len(names))]
        if outside:
            raise ModelLoadError(f"scorer model '{model}' has {len(names)} outputs (rows 0..{len(names) - 1}); "
                                 f"scorer.attributes names rows outside them ({', '.join(outside)})")
        return chosen
    unknown = [n for n in selection if n not in names]
    if unknown:
        raise ModelLoadError(f"scorer model '{model}' has no output named {', '.join(unknown)} (its outputs: "
                             f"{', '.join(names)}); name rows by index instead: scorer.attributes={{name: row}}")
    return {n: list(names).index(n) for n in selection}


def config_attributes(config: PretrainedConfig, rows: int, name: str) -> list[str]:
    """The names of a head of ``rows`` outputs: ``id2label`` in index order, ``LABEL_i`` where it names none."""
    id2label = {int(i): label for i, label in (config.id2label or {}).items()}
    id2label = id2label or {i: f"LABEL_{i}" for i in range(rows)}
    if sorted(id2label) != list(range(rows)):
        raise ModelLoadError(
            f"scorer model '{name}' has a score head of {rows} outputs but its config's id2label has indices "
            f"{sorted(id2label)}; a multi-objective reward model names each output (indices 0..{rows - 1})"
        )
    return [id2label[i] for i in range(rows)]
