"""Win rates with their uncertainty, and with response length controlled (docs/methods.md §7).

A win rate compares policy A's held-out responses with policy B's on the same prompts: for prompt i, the mean of
P(a > b) over A's n samples x B's n samples; the win rate is the mean of that over the P prompts.

- ``bootstrap_interval``: the 95% percentile interval by resampling **prompts** with replacement (the samples of
  one prompt share it and are not independent), seeded, so a run's intervals are reproducible.
- ``lc_rate``: AlpacaEval's length-controlled win rate (Dubois et al. 2024, arXiv 2404.04475, eq. 1
  without the per-instruction term, which cancels when both policies answer the same prompts): regress every
  pair's preference on its normalised length difference, logit P(a > b) = theta + phi tanh((|a| - |b|) / s) with
  s the standard deviation of the length differences, and report the prediction at equal length, sigmoid(theta).

Both take the prompts' resampling as count weights w (B draws x U units), so the bootstrap of the
length-controlled rate refits all B regressions at once.  A unit is a prompt, or (with directions, DPA) a prompt
with one direction in its system prompt; a prompt's units are resampled together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LEVEL = 0.95
BOOTSTRAP_DRAWS = 1000
NEWTON_STEPS = 30  # at most; Newton stops once no step moves theta by 1e-9
RIDGE = 1e-6  # on phi only, so that equal lengths (no length signal at all) leave it at 0


def pairwise_blocks(probs: list[torch.Tensor], a: slice, b: slice) -> torch.Tensor:
    """(P, n_a, n_b): P(a_j > b_k) for each prompt, from each prompt's joint probability matrix."""
    return torch.stack([p[a, b].to(torch.float64) for p in probs])


def mean_rate(prefs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The win rate under prompt weights: ``prefs`` (P, n_a, n_b), ``weights`` (B, P) -> (B,)."""
    per_prompt = prefs.to(torch.float64).mean(dim=(1, 2))
    return weights.to(torch.float64) @ per_prompt / weights.sum(dim=1)


def length_features(length_diff: torch.Tensor) -> torch.Tensor:
    """tanh(d / s), s the standard deviation of all the length differences d; zero when they are all equal."""
    d = length_diff.to(torch.float64)
    s = d.std(unbiased=False)
    return torch.tanh(d / s) if s > 0 else torch.zeros_like(d)


def lc_rate(prefs: torch.Tensor, length_diff: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Length-controlled win rate under prompt weights (B, P) -> (B,): the weighted logistic regression of the
    (soft) preferences on ``length_features``, fitted by Newton's method, evaluated at equal length."""
    x = length_features(length_diff).flatten(1)  # (P, m) with m = n_a n_b pairs a prompt
    y = prefs.to(torch.float64).flatten(1)
    w = weights.to(torch.float64)[:, :, None].expand(-1, -1, x.shape[1])  # (B, P, m)
    theta = torch.zeros(weights.shape[0], 2, dtype=torch.float64)  # (intercept, phi) per draw
    for _ in range(NEWTON_STEPS):
        p = torch.sigmoid(theta[:, :1, None] + theta[:, 1:, None] * x)  # (B, P, m)
        r, h = w * (p - y), w * p * (1 - p)
        grad = torch.stack([r.sum((1, 2)), (r * x).sum((1, 2)) + RIDGE * theta[:, 1]], dim=1)
        hx = (h * x).sum((1, 2))
        hess = torch.stack([torch.stack([h.sum((1, 2)) + 1e-12, hx], 1),
                            torch.stack([hx, (h * x * x).sum((1, 2)) + RIDGE], 1)], 1)
        step = torch.linalg.solve(hess, grad).clamp(-5.0, 5.0)  # damped: a rate of exactly 0 or 1 diverges
        theta = theta - step
        if step.abs().max() < 1e-9:
            break
    return torch.sigmoid(theta[:, 0])


def bootstrap_interval(statistic: Callable[[torch.Tensor], torch.Tensor], clusters: torch.Tensor, seed: int,
                       draws: int = BOOTSTRAP_DRAWS, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of ``statistic`` (unit weights (B, U) -> (B,)) over ``draws`` resamplings, with
    replacement, of the prompts: ``clusters`` (U,) gives each unit's prompt (units of one prompt, e.g. its
    directions, are drawn together); the generator is seeded with ``seed``."""
    prompts = int(clusters.max()) + 1 if len(clusters) else 0
    if prompts < 1:
        raise ValueError("a bootstrap interval needs at least one prompt")
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(prompts, (draws, prompts), generator=g)
    counts = torch.zeros(draws, prompts, dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(draws, prompts, dtype=torch.float64))
    values = statistic(counts[:, clusters])
    tail = (1 - level) / 2
    lo, hi = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return lo.item(), hi.item()


def win_rate_report(prefs: torch.Tensor, length_diff: torch.Tensor | None, clusters: torch.Tensor, seed: int,
                    name: str) -> dict:
    """``name`` and ``name_ci``; with lengths, ``lc_name`` and ``lc_name_ci`` too: the point estimates over every
    unit (weight 1 each) and their 95% bootstrap intervals over prompts (``clusters``: each unit's prompt)."""
    ones = torch.ones(1, prefs.shape[0], dtype=torch.float64)
    out = {name: mean_rate(prefs, ones).item(),
           f"{name}_ci": list(bootstrap_interval(lambda w: mean_rate(prefs, w), clusters, seed))}
    if length_diff is not None:
        out[f"lc_{name}"] = lc_rate(prefs, length_diff, ones).item()
        out[f"lc_{name}_ci"] = list(bootstrap_interval(lambda w: lc_rate(prefs, length_diff, w), clusters, seed))
    return out
