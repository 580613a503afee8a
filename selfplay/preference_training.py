"""Training and evaluating any preference model on (prompt, chosen, rejected) pairs."""

from __future__ import annotations

import random
from collections import defaultdict

import torch
from transformers import PreTrainedTokenizerBase

from selfplay.models.backbone import PreferenceModel
from selfplay.optim import minimize
from selfplay.pairs import PreferencePair


def train_preference_model(
    model: PreferenceModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PreferencePair],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """AdamW with linear decay over ``steps`` minibatches drawn with ``seed``, on the model's own pair loss.

    Returns the loss of every step.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)

    def step_loss(_: int) -> torch.Tensor:
        batch = rng.sample(pairs, min(batch_size, len(pairs)))
        return model.pair_loss(tokenizer, batch).mean()

    return minimize(model, step_loss, steps, lr, schedule=lambda s: 1.0 - s / max(steps, 1))


@torch.no_grad()
def pair_logits(
    model: PreferenceModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int = 256
) -> torch.Tensor:
    """Log-odds that chosen beats rejected, for every pair.  Returns (N,) on the CPU."""
    model.eval()
    return torch.cat([model.pair_logits(tokenizer, pairs[i:i + batch_size]).cpu() for i in range(0, len(pairs), batch_size)])


def accuracy(logits: torch.Tensor) -> float:
    """Share of pairs ranked right: logit > 0 counts 1, a tie (logit == 0) counts 1/2."""
    return ((logits > 0).float() + 0.5 * (logits == 0).float()).mean().item()


def pair_accuracy(
    model: PreferenceModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int = 256
) -> float:
    return accuracy(pair_logits(model, tokenizer, pairs, batch_size))


def accuracy_report(
    model: PreferenceModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int = 256
) -> dict:
    """Overall accuracy and, where pairs carry a subset, accuracy per subset (RewardBench-style)."""
    logits = pair_logits(model, tokenizer, pairs, batch_size)
    report = {"accuracy": accuracy(logits), "pairs": len(pairs), "mean_margin": logits.mean().item()}
    by_subset: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        if p.subset is not None:
            by_subset[p.subset].append(i)
    if by_subset:
        report["subsets"] = {name: {"accuracy": accuracy(logits[idx]), "pairs": len(idx)}
                             for name, idx in sorted(by_subset.items())}
    return report
