"""Training a GPM on (prompt, chosen, rejected) pairs: METHODS 2.2's pairwise loss."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from selfplay.modeling import Messages, encode_exchange, pad_sequences
from selfplay.models.gpm import GPM, pair_scores
from selfplay.optim import minimize


@dataclass
class PreferencePair:
    prompt: Messages
    chosen: str
    rejected: str


def gpm_pair_loss(s_w_l: torch.Tensor, tau: float) -> torch.Tensor:
    """-log sigmoid(s(y_w > y_l | x) / tau), per pair (METHODS 2.2)."""
    return -F.logsigmoid(s_w_l / tau)


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen responses in rows [0, B), rejected in [B, 2B): ids (2B, T), mask, prompt lengths (2B,)."""
    seqs, prompt_lens = [], []
    for side in ("chosen", "rejected"):
        for p in pairs:
            ids, n = encode_exchange(tokenizer, p.prompt, getattr(p, side))
            seqs.append(ids)
            prompt_lens.append(n)
    ids, mask = pad_sequences(seqs, tokenizer.pad_token_id)
    return ids, mask, torch.tensor(prompt_lens)


def chosen_scores(gpm: GPM, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> torch.Tensor:
    """s(chosen > rejected | x) for each pair (before the temperature).  Returns (B,)."""
    device = next(gpm.parameters()).device
    ids, mask, plen = (t.to(device) for t in encode_pairs(tokenizer, pairs))
    v, lam = gpm.embed(ids, mask, plen)
    b = len(pairs)
    return pair_scores(v[:b], v[b:], lam[:b])


def train_gpm(
    gpm: GPM,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PreferencePair],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """AdamW with linear decay over `steps` minibatches drawn with `seed`; returns the loss per step."""
    rng = random.Random(seed)
    torch.manual_seed(seed)

    def step_loss(_: int) -> torch.Tensor:
        batch = rng.sample(pairs, min(batch_size, len(pairs)))
        return gpm_pair_loss(chosen_scores(gpm, tokenizer, batch), gpm.tau).mean()

    return minimize(gpm, step_loss, steps, lr, schedule=lambda s: 1.0 - s / max(steps, 1))


@torch.no_grad()
def pair_accuracy(gpm: GPM, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int = 256) -> float:
    """Share of pairs where s(chosen > rejected) > 0."""
    gpm.eval()
    right = 0
    for i in range(0, len(pairs), batch_size):
        right += (chosen_scores(gpm, tokenizer, pairs[i : i + batch_size]) > 0).sum().item()
    return right / len(pairs)
