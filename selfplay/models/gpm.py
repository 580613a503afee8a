"""General Preference representation Model (GPM), [GPM] section 4 and docs/methods.md §2.2 / A.1.

Each (x, y) is embedded as a unit vector v in R^{2k}; preferences come from a
block skew-symmetric operator with k blocks [[0, -1], [1, 0]], each scaled by a
prompt-dependent eigenvalue lambda_l(x) >= 0 (the scale gate, softmax over the
k blocks):

    s(y_i > y_j | x) = <R(x) v_i, v_j> = sum_l lambda_l (v_i[2l] v_j[2l+1] - v_i[2l+1] v_j[2l])   ([GPM] eq. 4.2)

which is skew-symmetric (s(i, j) = -s(j, i), s(i, i) = 0).  P(y_i > y_j | x) =
sigmoid(s / tau).  We call ``s / tau`` the *score* (the preference log-odds of
[GPM] sec. 5), so ``sigmoid(score)`` is the probability.

Sign convention: eq. 4.2 and the published checkpoints (A.1, s = v_i^T R^T v_j)
agree; the shared METHODS.md's (2.2) ``v_i^T D R D v_j`` is the negative of both, and we follow
the paper's eq. 4.2.

Checkpoint layout (A.1): the base model's config; safetensors with the backbone
under ``model.``, ``value_head.weight`` [2k, hidden] and, with the gate,
``prompt_head.weight`` [k, hidden]; no biases.  We add ``preference_model.json``
(kind, k, gate, tau, max_length); a published checkpoint without it loads the same way, its
gate read from whether ``prompt_head.weight`` is present.

Input layout: the authors' released example pipeline (``GPMPipeline`` in gpm_example_usage.py), which the
released checkpoints were trained with (``GeneralRewardDataset``), so a published checkpoint scores here as it
does there (``encode_published``; docs/methods.md §2.2).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from selfplay.core.lm import Messages, ModelLoadError, ModelTrust
from selfplay.data.pairs import PreferencePair
from selfplay.models.backbone import (PreferenceModel, at_positions, backbone_from_state, batched, check_kind,
                                      device_of, encode_responses, last_token, read_checkpoint, save_checkpoint,
                                      tensor_shapes)


MAX_LENGTH = 4096  # GPMPipeline's default: longer conversations are cut from the right


def encode_published(tokenizer: PreTrainedTokenizerBase, messages: Messages, response: str,
                     max_length: int = MAX_LENGTH) -> tuple[list[int], int]:
    """The GPM authors' input for (prompt, response) and the gate's position plus one.

    - The ids: the whole conversation (prompt turns and the response) rendered by the chat template without a
      generation prompt, tokenised with the tokenizer's special tokens (so a template that writes BOS itself
      gets a second one, as their data code notes and keeps), cut at ``max_length``, its last token overwritten
      with EOS (a template's trailing newline becomes EOS; a turn cut short ends in EOS).
    - The gate reads the token that closes the *first* message rendered alone (``[sample[0]]`` in their code):
      the user turn's end for a plain prompt, the system turn's end where a system prompt comes first.  The
      second value is that token's index plus one (at most the sequence's length).

    Memoised: training sees the same pairs every epoch."""
    ids, n = _encode_published(tokenizer, json.dumps(messages), response, max_length)
    return list(ids), n


@functools.lru_cache(maxsize=1 << 16)
def _encode_published(tokenizer: PreTrainedTokenizerBase, messages: str, response: str,
                      max_length: int) -> tuple[tuple[int, ...], int]:
    msgs = json.loads(messages)
    full = tokenizer.apply_chat_template([*msgs, {"role": "assistant", "content": response}], tokenize=False)
    ids = tokenizer(full, truncation=True, max_length=max_length)["input_ids"]
    ids[-1] = tokenizer.eos_token_id
    first = tokenizer.apply_chat_template(msgs[:1], tokenize=False)
    n = len(tokenizer(first, truncation=True, max_length=max_length)["input_ids"])
    return tuple(ids), min(n, len(ids))


def score_matrix(v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """S[i, j] = <R v_i, v_j> for v (K, 2k) and eigenvalues lam (k,).  Returns (K, K), skew-symmetric."""
    even, odd = v[:, 0::2], v[:, 1::2]  # (K, k) each
    a = (even * lam) @ odd.T  # a[i, j] = sum_l lam_l v_i[2l] v_j[2l+1]
    return a - a.T  # exactly skew-symmetric in floating point, with an exact zero diagonal


def block_scores(v_i: torch.Tensor, v_j: torch.Tensor) -> torch.Tensor:
    """Each block's term of s(y_i > y_j | x) before its eigenvalue, row by row, for v_i, v_j (B, 2k).  Returns (B, k)."""
    return v_i[:, 0::2] * v_j[:, 1::2] - v_i[:, 1::2] * v_j[:, 0::2]


def pair_scores(v_i: torch.Tensor, v_j: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """s(y_i > y_j | x) row by row for v_i, v_j (B, 2k) and lam (B, k).  Returns (B,)."""
    return (lam * block_scores(v_i, v_j)).sum(-1)


class GPM(PreferenceModel):
    """A causal-LM backbone with the GPM embedding head and optional scale gate."""

    kind = "gpm"
    head_tensors = ("value_head.weight",)

    def __init__(self, backbone: nn.Module, k: int, gate: bool = True, tau: float = 0.1, max_length: int = MAX_LENGTH):
        super().__init__(backbone)
        hidden = backbone.config.hidden_size
        self.k, self.gate, self.tau, self.max_length = k, gate, tau, max_length
        self.value_head = nn.Linear(hidden, 2 * k, bias=False)
        self.prompt_head = nn.Linear(hidden, k, bias=False) if gate else None

    def encode(self, tokenizer: PreTrainedTokenizerBase, messages: Messages, response: str) -> tuple[list[int], int]:
        return encode_published(tokenizer, messages, response, self.max_length)

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings v (B, 2k) at the last non-pad token and eigenvalues lambda (B, k).

        Sequences are right-padded; the gate reads the state at ``prompt_len[b] - 1`` of sequence b
        (``encode_published``: the end of the first message).
        """
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        v = F.normalize(self.value_head(last_token(hidden, attention_mask)).float(), dim=-1)
        if self.prompt_head is None:
            lam = torch.ones(hidden.shape[0], self.k, device=hidden.device)
        else:
            lam = torch.softmax(self.prompt_head(at_positions(hidden, prompt_len - 1)).float(), dim=-1)
        return v, lam

    def embed_all(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """v (N, 2k) and lambda (N, k) for every (prompt, response), prompt-major, in chunks of ``batch_size``."""
        seqs, prompt_lens = encode_responses(tokenizer, prompts, responses, self.encode)
        device = device_of(self)
        plen = torch.tensor(prompt_lens, device=device)
        vs, lams = [], []
        for start, ids, mask in batched(seqs, tokenizer, batch_size, device):
            v, lam = self.embed(ids, mask, plen[start:start + ids.shape[0]])
            vs.append(v)
            lams.append(lam)
        return torch.cat(vs), torch.cat(lams)

    def chosen_scores(self, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> torch.Tensor:
        """s(chosen > rejected | x) per pair, before the temperature.  Returns (B,)."""
        prompts = [p.prompt for p in pairs]
        v, lam = self.embed_all(tokenizer, prompts + prompts, [[p.chosen] for p in pairs] + [[p.rejected] for p in pairs],
                                batch_size=2 * len(pairs))
        b = len(pairs)
        return pair_scores(v[:b], v[b:], lam[:b])

    def pair_logits(self, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> torch.Tensor:
        return self.chosen_scores(tokenizer, pairs) / self.tau

    @torch.no_grad()
    def score_matrices(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]], batch_size: int
    ) -> list[torch.Tensor]:
        """K forward passes per prompt, then all K^2 scores as one small product ([GPM] sec. 4)."""
        v, lam = self.embed_all(tokenizer, prompts, responses, batch_size)
        out, start = [], 0
        for group in responses:
            k = len(group)
            # The gate reads the end of the first message, the same prefix in a prompt's K sequences: use the first.
            out.append((score_matrix(v[start:start + k], lam[start]) / self.tau).cpu())
            start += k
        return out

    def save_pretrained(self, path: str | Path) -> None:
        heads = {"value_head.weight": self.value_head.weight}
        if self.prompt_head is not None:
            heads["prompt_head.weight"] = self.prompt_head.weight
        save_checkpoint(path, self.model, heads, {"kind": self.kind, "k": self.k, "gate": self.gate, "tau": self.tau,
                                                  "max_length": self.max_length})

    @classmethod
    def from_pretrained(cls, name: str, k: int | None = None, tau: float | None = None,
                        trust: ModelTrust = ModelTrust(), max_length: int | None = None,
                        dtype: torch.dtype = torch.float32) -> GPM:
        """Load our layout or the published one (A.1).  k defaults to the checkpoint's head size;
        a configured k that does not match the checkpoint is refused, never randomly initialised.  ``max_length``
        (tokens a conversation is cut to) defaults to the checkpoint's record, else the authors' 4096; ``dtype``
        (``scorer.dtype``) is the one the weights are built in."""
        path, state, meta = read_checkpoint(name, "scorer model", trust.allow_pickle)
        check_kind(meta, cls.kind, name)
        if (problem := cls.head_problem(tensor_shapes(state))) is not None:
            raise ModelLoadError(f"scorer model '{name}' {problem}: not a GPM checkpoint")
        two_k = state["value_head.weight"].shape[0]
        if two_k % 2:
            raise ModelLoadError(f"scorer model '{name}': value_head.weight has {two_k} rows, expected an even 2k")
        if k is not None and 2 * k != two_k:
            raise ModelLoadError(f"scorer model '{name}' has value_head of size {two_k} (k={two_k // 2}) but scorer k={k}")
        gate = "prompt_head.weight" in state
        if gate and state["prompt_head.weight"].shape[0] != two_k // 2:
            raise ModelLoadError(
                f"scorer model '{name}': prompt_head.weight has {state['prompt_head.weight'].shape[0]} rows, expected k={two_k // 2}"
            )
        backbone = backbone_from_state(path, state, "scorer model", trust.trust_remote_code, dtype)
        gpm = cls(backbone, k=two_k // 2, gate=gate, tau=tau if tau is not None else meta.get("tau", 0.1),
                  max_length=max_length or meta.get("max_length", MAX_LENGTH))
        gpm.value_head.weight.data.copy_(state["value_head.weight"])
        if gate:
            gpm.prompt_head.weight.data.copy_(state["prompt_head.weight"])
        return gpm.to(dtype)
