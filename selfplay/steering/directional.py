"""Runs with a multi-objective reward model: directions in, Pareto fronts out (docs/methods.md §3).

``Steering`` holds what the loop needs to condition prompts on preference directions
and to judge along them: the attribute names, the training distribution, the
evaluation grid, tau and the hypervolume reference.  ``front_metrics`` turns one
evaluation (rewards per (prompt, grid direction)) into the front of each policy, its
hypervolume and the steerability correlations.

Scalarised preferences, for every algorithm (``directional_scores``):
``S[i, j] = v^T (r_i - r_j) / tau``; so GPO's s_ij is v^T (r_i - r_j) (in units of tau)
and DPA's argmax of v^T r is the argmax of S's row means.  Using a multi-objective
scorer with GPO / SPPO / DPO / IPO / SimPO is our composition, not [DPA]'s.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from selfplay.core.checkpoint import atomic_write_json
from selfplay.core.lm import Messages
from selfplay.steering import directions as dirs
from selfplay.steering.directions import Direction
from selfplay.steering.pareto import hypervolume, spearman

ATTRIBUTES_FILE = "directions.json"  # beside a policy checkpoint: the attributes its directions range over


@dataclass
class Steering:
    names: list[str]  # the reward model's attributes, in order
    draw: Callable[[random.Random], Direction]  # the training distribution
    per_prompt: int  # directions per training prompt and iteration
    grid: list[Direction]  # the evaluation directions
    reference: list[float]  # hypervolume reference point
    tau: float

    @classmethod
    def from_config(cls, cfg: DictConfig, names: Sequence[str]) -> Steering:
        """From the ``directions`` section and ``scorer.tau``; DirectionError on a direction of the wrong length."""
        d = cfg.directions
        reference = list(d.hv_reference) if d.hv_reference is not None else [0.0] * len(names)
        if len(reference) != len(names):
            raise dirs.DirectionError(f"directions.hv_reference needs one value per attribute ({', '.join(names)}), "
                                      f"got {len(reference)}")
        return cls(list(names), dirs.sampler(d, names), d.per_prompt, dirs.evaluation_grid(d, names), reference,
                   cfg.scorer.tau)

    def condition(self, prompts: list[Messages], directions: list[Direction]) -> list[Messages]:
        return [dirs.condition(p, v, self.names) for p, v in zip(prompts, directions)]

    def training_units(self, prompts: list[Messages], rng: random.Random) -> tuple[list[Messages], list[Direction]]:
        """Each prompt ``per_prompt`` times, each with a freshly drawn direction in its system prompt."""
        base = [p for p in prompts for _ in range(self.per_prompt)]
        vs = [self.draw(rng) for _ in base]
        return self.condition(base, vs), vs

    def evaluation_units(self, prompts: list[Messages]) -> tuple[list[Messages], list[Direction]]:
        """Every held-out prompt with every grid direction, grid-major within a prompt."""
        base = [p for p in prompts for _ in self.grid]
        vs = [v for _ in prompts for v in self.grid]
        return self.condition(base, vs), vs

    def scores(self, rewards: torch.Tensor, v: Direction) -> torch.Tensor:
        return directional_scores(rewards, v, self.tau)


def directional_scores(rewards: torch.Tensor, v: Sequence[float], tau: float) -> torch.Tensor:
    """S[i, j] = v^T (r_i - r_j) / tau for rewards (K, m): skew-symmetric log-odds.  Returns (K, K)."""
    r = dirs.scalarise(rewards, v)
    return (r[:, None] - r[None, :]) / tau


def front_metrics(rewards: list[torch.Tensor], directions: list[Direction], grid: list[Direction],
                  names: list[str], reference: list[float], lengths: list[list[int]] | None = None,
                  prefix: str = "") -> dict:
    """The empirical Pareto front of one policy: for each grid direction, the mean reward vector over the
    units evaluated with it.  ``rewards``: (n, m) per unit (the policy's n responses).

    Returns ``{prefix}front`` (G x m), ``{prefix}hypervolume`` against ``reference``, and
    ``{prefix}steerability``: per attribute, the Spearman correlation across the grid between
    the direction's weight on it and its mean; with ``lengths`` also ``length_steerability``:
    per attribute, weight vs mean response length.
    """
    front, mean_length = [], []
    for g in grid:
        units = [i for i, v in enumerate(directions) if v == g]
        front.append(torch.cat([rewards[i] for i in units]).mean(dim=0).tolist())
        if lengths is not None:
            mean_length.append(sum(x for i in units for x in lengths[i]) / sum(len(lengths[i]) for i in units))
    out = {f"{prefix}front": front, f"{prefix}hypervolume": hypervolume(front, reference)}
    if len(grid) > 1:
        weights = [[g[a] for g in grid] for a in range(len(names))]
        out[f"{prefix}steerability"] = {n: spearman(weights[a], [p[a] for p in front]) for a, n in enumerate(names)}
        if lengths is not None:
            out["length_steerability"] = {n: spearman(weights[a], mean_length) for a, n in enumerate(names)}
            out["front_mean_length"] = mean_length
    return out


def save_attributes(checkpoint: str | Path, names: Sequence[str]) -> None:
    """Record beside a policy checkpoint which attributes its direction system prompts use."""
    atomic_write_json(Path(checkpoint) / ATTRIBUTES_FILE, {"attributes": list(names)})


def load_attributes(checkpoint: str | Path) -> list[str] | None:
    """The attributes ``save_attributes`` recorded, or None for a checkpoint without them."""
    path = Path(checkpoint) / ATTRIBUTES_FILE
    return json.loads(path.read_text())["attributes"] if path.exists() else None
