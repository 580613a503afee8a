"""Win rates (METHODS 1.5): WR = mean over prompts and sample pairs of P(y_a > y_b | x)."""

from __future__ import annotations

import torch


def block_win_rate(prob: torch.Tensor, a: slice, b: slice) -> float:
    """Mean P(y_i > y_j) over i in block a, j in block b of one prompt's probability matrix."""
    return prob[a, b].mean().item()


def win_rates(probs: list[torch.Tensor], n: int) -> dict[str, float]:
    """Each prob matrix orders responses [current (n), initial (n), previous (n)].

    Returns the scorer's ``vs_initial`` and ``vs_previous``: the mean over prompts of the
    mean over the n x n sample pairs.
    """
    cur, init, prev = slice(0, n), slice(n, 2 * n), slice(2 * n, 3 * n)
    return {
        "vs_initial": sum(block_win_rate(p, cur, init) for p in probs) / len(probs),
        "vs_previous": sum(block_win_rate(p, cur, prev) for p in probs) / len(probs),
    }
