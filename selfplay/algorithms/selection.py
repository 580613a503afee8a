"""Choosing (chosen, rejected) pairs among K scored responses of one prompt (Online-RLHF style).

Every strategy reads a K x K preference matrix, the probabilities
P[i, j] = P(y_i > y_j | x) (or GPO's log-odds scores S, docs/methods.md §A.2), and ranks
responses by their row mean p_i = (1/K) sum_j P[i, j] (the diagonal included,
as in SPPO's recipe):

- ``best_worst``: (argmax p, argmin p), one pair per prompt (the default);
- ``best_random``: (argmax p, a uniformly drawn other response);
- ``all_pairs``: every pair (i, j), oriented so that P[w, l] >= 1/2, the most
  confident first, at most ``max_pairs`` per prompt.

The margin filter then drops pairs with P(y_w > y_l) < ``min_prob``, and a pair
of identical responses is never kept (it carries no preference).
"""

from __future__ import annotations

import random

import torch

PAIR_STRATEGIES: tuple[str, ...] = ("best_worst", "best_random", "all_pairs")


def row_means(probs: torch.Tensor) -> torch.Tensor:
    """p_i = (1/K) sum_j P[i, j], diagonal included (P_hat(y_i > pi_t | x); with S: s_hat_i).  (K, K) -> (K,)."""
    return probs.mean(dim=1)


def candidate_pairs(probs: torch.Tensor, strategy: str, rng: random.Random, max_pairs: int) -> list[tuple[int, int]]:
    """(winner, loser) index pairs of one prompt by ``strategy``, before filtering."""
    k = probs.shape[0]
    p = row_means(probs)
    best, worst = int(p.argmax()), int(p.argmin())
    if strategy == "best_worst":
        return [(best, worst)]
    if strategy == "best_random":
        return [(best, rng.choice([j for j in range(k) if j != best]))]
    if strategy == "all_pairs":
        pairs = [(i, j) if probs[i, j] >= probs[j, i] else (j, i) for i in range(k) for j in range(i + 1, k)]
        pairs.sort(key=lambda wl: -float(probs[wl]))  # stable: ties keep index order
        return pairs[:max_pairs]
    raise ValueError(f"unknown pair strategy '{strategy}'; expected one of {PAIR_STRATEGIES}")


def select_pairs(
    probs: torch.Tensor, responses: list[list[int]], strategy: str, rng: random.Random, max_pairs: int,
    min_prob: float,
) -> list[tuple[int, int]]:
    """The strategy's pairs that pass the margin filter P[w, l] >= ``min_prob`` and differ in their tokens."""
    return [(w, l) for w, l in candidate_pairs(probs, strategy, rng, max_pairs)
            if float(probs[w, l]) >= min_prob - 1e-6 and responses[w] != responses[l]]  # float32 probabilities
