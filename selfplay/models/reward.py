"""Bradley-Terry reward model, docs/methods.md §2.1: a scalar head on the last token's hidden state.

    r(x, y) = w^T h_last(x, y),   P(y_w > y_l | x) = sigmoid(r_w - r_l),   loss = -log sigmoid(r_w - r_l)

so the score matrix is S[i, j] = r_i - r_j (K forward passes, like the GPM; a
GPM with k = 1 and v = [r, 1] gives exactly this matrix).

The checkpoint is Hugging Face's sequence-classification layout (``model.*`` +
``score.weight`` [num_labels, hidden], config ``num_labels``), so it loads as
``AutoModelForSequenceClassification`` and a TRL-trained reward model loads here.
We read the last non-pad token from the attention mask, not by searching for the
pad id, so tokenizers whose pad token is EOS score the final EOS like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from selfplay.core.lm import Messages, ModelLoadError, ModelTrust
from selfplay.data.pairs import PreferencePair
from selfplay.models.backbone import (PreferenceModel, backbone_from_state, batched, check_kind, device_of,
                                      encode_responses, last_token, read_checkpoint, save_checkpoint,
                                      tensor_shapes)


def reward_score_matrix(r: torch.Tensor) -> torch.Tensor:
    """S[i, j] = r_i - r_j for rewards r (K,).  Returns (K, K), skew-symmetric."""
    return r[:, None] - r[None, :]


class RewardModel(PreferenceModel):
    """A backbone with a linear head of ``num_labels`` outputs at the last token (BT when num_labels = 1)."""

    kind = "bt"
    kind_required = False  # a reward model without our meta file (e.g. TRL's) is taken as BT
    head_tensors = ("score.weight",)
    outputs: int | None = 1  # rows of score.weight; None: any number

    @classmethod
    def head_problem(cls, tensors: dict[str, list[int]]) -> str | None:
        rows = tensors.get("score.weight", [None])[0]
        if rows is not None and cls.outputs is not None and rows != cls.outputs:
            return (f"has a score head of {rows} outputs; a '{cls.kind}' model has {cls.outputs} (a reward model of "
                    "several attributes: kind=multi_objective)")
        return super().head_problem(tensors)

    def __init__(self, backbone: nn.Module, num_labels: int = 1):
        super().__init__(backbone)
        self.num_labels = num_labels
        self.score = nn.Linear(backbone.config.hidden_size, num_labels, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards (B, num_labels) at the last non-pad token."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.score(last_token(hidden, attention_mask)).float()

    def rewards(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]], batch_size: int
    ) -> torch.Tensor:
        """Rewards (N, num_labels) of every (prompt, response), prompt-major."""
        seqs, _ = encode_responses(tokenizer, prompts, responses, self.encode)
        return torch.cat([self(ids, mask) for _, ids, mask in batched(seqs, tokenizer, batch_size, device_of(self))])

    def pair_logits(self, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> torch.Tensor:
        prompts = [p.prompt for p in pairs]
        r = self.rewards(tokenizer, prompts + prompts, [[p.chosen] for p in pairs] + [[p.rejected] for p in pairs],
                         batch_size=2 * len(pairs))[:, 0]
        return r[: len(pairs)] - r[len(pairs):]

    @torch.no_grad()
    def score_matrices(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]], batch_size: int
    ) -> list[torch.Tensor]:
        r = self.rewards(tokenizer, prompts, responses, batch_size)[:, 0].cpu()
        out, start = [], 0
        for group in responses:
            out.append(reward_score_matrix(r[start:start + len(group)]))
            start += len(group)
        return out

    def head_config(self) -> PretrainedConfig:
        """The backbone's config as a sequence-classification model's: ``num_labels`` and ``architectures`` set."""
        config = self.config.__class__.from_dict(self.config.to_dict())
        config.num_labels = self.num_labels
        config.architectures = [MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES[config.model_type]]
        return config

    def save_pretrained(self, path: str | Path) -> None:
        save_checkpoint(path, self.model, {"score.weight": self.score.weight}, {"kind": self.kind},
                        config=self.head_config())

    @classmethod
    def from_pretrained(cls, name: str, trust: ModelTrust = ModelTrust(),
                        dtype: torch.dtype = torch.float32) -> RewardModel:
        path, state = read_reward_checkpoint(name, cls.kind, cls.kind_required, trust.allow_pickle)
        problem = cls.head_problem(tensor_shapes(state))
        if problem:
            raise ModelLoadError(f"scorer model '{name}' {problem}")
        rows = state["score.weight"].shape[0]
        model = cls(backbone_from_state(path, state, "scorer model", trust.trust_remote_code, dtype), num_labels=rows)
        model.score.weight.data.copy_(state["score.weight"])
        return model.to(dtype)


def read_reward_checkpoint(name: str, kind: str, kind_required: bool,
                           allow_pickle: bool = False) -> tuple[Path, dict[str, torch.Tensor]]:
    """The directory and tensors of the sequence-classification checkpoint ``name``, refused (naming it) if its
    meta says another kind, or, with ``kind_required``, nothing, or if it has no ``score.weight``."""
    path, state, meta = read_checkpoint(name, "scorer model", allow_pickle)
    check_kind(meta, kind, name, required=kind_required)
    if "score.weight" not in state:
        raise ModelLoadError(f"scorer model '{name}' has no score.weight: not a reward-model checkpoint")
    return path, state
