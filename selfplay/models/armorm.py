"""ArmoRM (Wang et al. 2024, "Interpretable Preferences via Multi-Objective Reward Modeling and Mixture-of-Experts",
arXiv 2406.12845), read natively from its published checkpoint: its own ``modeling_custom.py`` is never run (it does
not import on transformers 5).  The computation, from the authors' code (RLHFlow/RLHF-Reward-Modeling armo-rm/
stage-2_*.py and the hub's modeling_custom.py):

    r(x, y) = W h_last(x, y)                        W = regression_layer.weight [m, H], no bias (m = 19)
    g(x)    = softmax(MLP(h_gate(x)) / T) * s       MLP: n ReLU layers then a linear one (gating.layers.*),
                                                    T = config gating_temperature (10), s = gating.logit_scale
    score   = g(x)^T (r(x, y) A)                    A = reward_transform_matrix [m, m] (verbosity debiasing)

``h_last`` is the hidden state of the conversation's last token (the final ``<|eot_id|>``), ``h_gate`` the one at the
start of the last ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`` (the end of the prompt), both over
``apply_chat_template`` of the whole conversation, as the model card scores it.  The rewards are on about [0, 1]
(a HelpSteer rating is 5 r - 0.5); the score was trained as a Bradley-Terry logit, P(y_w > y_l) = sigma(s_w - s_l).

The self-play loop reads the objectives ``scorer.attributes`` selects (default: helpfulness = row 0 and verbosity =
row 4, the names DPA's template uses) for directions, S = v^T (r_i - r_j) / tau, and the score where a run asks for
one preference matrix, S = s_i - s_j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from selfplay.core.lm import Messages, ModelLoadError, ModelTrust
from selfplay.models.backbone import (PreferenceModel, at_positions, backbone_from_state, batched, check_kind,
                                      device_of, last_token, read_checkpoint, tensor_shapes)
from selfplay.models.multi_objective import select_attributes
from selfplay.models.reward import reward_score_matrix

# The model card's order of the 19 objectives (the config names none: its id2label is {0: LABEL_0}).
OBJECTIVES = ("helpsteer-helpfulness", "helpsteer-correctness", "helpsteer-coherence", "helpsteer-complexity",
              "helpsteer-verbosity", "ultrafeedback-overall_score", "ultrafeedback-instruction_following",
              "ultrafeedback-truthfulness", "ultrafeedback-honesty", "ultrafeedback-helpfulness",
              "beavertails-is_safe", "prometheus-score", "argilla-overall_quality", "argilla-judge_lm",
              "code-complexity", "code-style", "code-explanation", "code-instruction-following", "code-readability")
DEFAULT_ATTRIBUTES = {"helpfulness": 0, "verbosity": 4}  # helpsteer-helpfulness and helpsteer-verbosity
GATE_TEXT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"  # the gate reads its first token
HEADS = ("regression_layer.weight", "reward_transform_matrix", "gating.logit_scale", "gating.layers.0.weight")


class Gate(nn.Module):
    """ArmoRM's gating network: ReLU MLP, then softmax(. / temperature) scaled by a learnt logit scale."""

    def __init__(self, hidden: int, objectives: int, width: int, depth: int, temperature: float):
        super().__init__()
        sizes = [hidden] + [width] * depth + [objectives]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.logit_scale = nn.Parameter(torch.ones(1))
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return F.softmax(self.layers[-1](x) / self.temperature, dim=-1) * self.logit_scale[0]


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: Messages, response: str) -> list[int]:
    """The ids of the whole conversation (prompt, then the response as the assistant's turn) as the tokenizer's chat
    template writes it: what the model card passes to the model."""
    chat = [*messages, {"role": "assistant", "content": response}]
    return tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"]


def gate_position(ids: list[int], pattern: list[int]) -> int:
    """The start of the last occurrence of ``pattern`` in ``ids``: the prompt's closing ``<|eot_id|>``."""
    n = len(pattern)
    for j in range(len(ids) - n, -1, -1):
        if ids[j:j + n] == pattern:
            return j
    raise ValueError(f"ArmoRM's gate token {GATE_TEXT!r} is not in the conversation: its tokenizer's chat template "
                     "must be Llama 3's")


class ArmoRM(PreferenceModel):
    """A Llama backbone with ArmoRM's regression layer, gating network and reward transform."""

    kind = "armorm"
    head_tensors = HEADS

    def __init__(self, backbone: nn.Module, objectives: int, width: int = 1024, depth: int = 3,
                 temperature: float = 10.0, attributes: dict[str, int] | None = None):
        super().__init__(backbone)
        hidden = backbone.config.hidden_size
        self.regression_layer = nn.Linear(hidden, objectives, bias=False)
        self.gating = Gate(hidden, objectives, width, depth, temperature)
        self.reward_transform_matrix = nn.Parameter(torch.eye(objectives), requires_grad=False)
        self.scored = dict(DEFAULT_ATTRIBUTES if attributes is None else attributes)  # name -> row

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rewards (B, m) at the last non-pad token, score (B,) from the gate at ``gates``), in float32."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rewards = self.regression_layer(last_token(hidden, attention_mask))
        weights = self.gating(at_positions(hidden, gates))
        return rewards.float(), (weights * (rewards @ self.reward_transform_matrix)).sum(-1).float()

    def outputs(self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]],
                batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards (N, m) and scores (N,) of every (prompt, response), prompt-major."""
        seqs = [encode_conversation(tokenizer, m, r) for m, group in zip(prompts, responses) for r in group]
        pattern = tokenizer(GATE_TEXT, add_special_tokens=False)["input_ids"]
        gates = torch.tensor([gate_position(s, pattern) for s in seqs])
        out = [self(ids, mask, gates[start:start + len(ids)].to(ids.device))
               for start, ids, mask in batched(seqs, tokenizer, batch_size, device_of(self))]
        return torch.cat([r for r, _ in out]), torch.cat([s for _, s in out])

    @torch.no_grad()
    def attribute_rewards(self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages],
                          responses: list[list[str]], batch_size: int) -> list[torch.Tensor]:
        """One (K_p, len(scored)) tensor per prompt: the selected objectives' rewards, on the CPU."""
        r = self.outputs(tokenizer, prompts, responses, batch_size)[0][:, list(self.scored.values())].cpu()
        return list(torch.split(r, [len(group) for group in responses]))

    @torch.no_grad()
    def score_matrices(self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages],
                       responses: list[list[str]], batch_size: int) -> list[torch.Tensor]:
        """S[i, j] = s_i - s_j of the gated scores: the Bradley-Terry log-odds ArmoRM's gate was trained on."""
        s = self.outputs(tokenizer, prompts, responses, batch_size)[1].cpu()
        return [reward_score_matrix(g) for g in torch.split(s, [len(group) for group in responses])]

    def pair_logits(self, tokenizer: PreTrainedTokenizerBase, pairs: list) -> torch.Tensor:
        prompts = [p.prompt for p in pairs]
        s = self.outputs(tokenizer, prompts + prompts, [[p.chosen] for p in pairs] + [[p.rejected] for p in pairs],
                         2 * len(pairs))[1]
        return s[: len(pairs)] - s[len(pairs):]

    @classmethod
    def from_pretrained(cls, name: str, trust: ModelTrust = ModelTrust(), dtype: torch.dtype = torch.float32,
                        attributes: dict[str, int] | None = None) -> ArmoRM:
        """The published layout: ``model.*`` (a Llama), ``regression_layer.weight``, ``gating.*`` and
        ``reward_transform_matrix``; the gate's temperature from config.json (``gating_temperature``)."""
        path, state, meta = read_checkpoint(name, "scorer model", trust.allow_pickle)
        check_kind(meta, cls.kind, name)  # one of ours, saved as another kind
        if (problem := cls.head_problem(tensor_shapes(state))) is not None:
            raise ModelLoadError(f"scorer model '{name}' {problem}: not an ArmoRM checkpoint")
        backbone = backbone_from_state(path, state, "scorer model", trust.trust_remote_code, dtype)
        objectives = state["regression_layer.weight"].shape[0]
        depth = sum(1 for t in state if t.startswith("gating.layers.") and t.endswith(".weight")) - 1
        width = state["gating.layers.0.weight"].shape[0] if depth else objectives
        temperature = float(getattr(backbone.config, "gating_temperature", 10.0))
        chosen = select_attributes(DEFAULT_ATTRIBUTES if attributes is None else attributes,
                                   objective_names(objectives), name)
        model = cls(backbone, objectives, width, depth, temperature, chosen)
        try:
            missing, _ = model.load_state_dict({t: v for t, v in state.items() if not t.startswith("model.")},
                                               strict=False)
        except RuntimeError as e:  # a head of another shape than its neighbours
            raise ModelLoadError(f"scorer model '{name}': its ArmoRM heads do not fit together: "
                                 f"{str(e).splitlines()[-1].strip()}") from None
        missing = [t for t in missing if not t.startswith("model.")]
        if missing:
            raise ModelLoadError(f"scorer model '{name}' lacks ArmoRM's {', '.join(missing)}")
        return model.to(dtype)


def objective_names(objectives: int) -> list[str]:
    """The names of ArmoRM's rows: the model card's 19, or ``LABEL_i`` for a head of another size."""
    return list(OBJECTIVES) if objectives == len(OBJECTIVES) else [f"LABEL_{i}" for i in range(objectives)]
