"""The judge of a run, chosen once by ``selfplay.run``: how responses are scored and what is said about them.

- ``PreferenceJudge``: a preference model (GPM, BT, pairwise) gives each prompt's K responses a K x K
  matrix of log-odds S[i, j] = log P(y_i > y_j | x) / P(y_j > y_i | x) (docs/methods.md §2).
- ``DirectionalJudge``: each prompt carries a preference direction v in its system prompt; a
  multi-objective reward model gives r(x, y) in R^m per response (read without that system prompt), and
  S[i, j] = v^T (r_i - r_j) / tau (docs/methods.md §3.2).  It also reports each policy's Pareto front
  over the evaluation grid, and records the attributes beside every checkpoint.

The loop calls the same methods on either and never asks which one it has: ``judge`` for responses that are
all there (evaluation), or ``scoring`` (chunks sent as the responses arrive) and then ``verdict`` (the rollout).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from omegaconf import DictConfig

from selfplay.core.checkpoint import read_metrics
from selfplay.core.lm import Messages
from selfplay.loop.sources import Oracle
from selfplay.loop.stages import Scoring
from selfplay.loop.workers import Workers
from selfplay.steering.directional import Steering, front_metrics, save_attributes
from selfplay.steering.directions import Direction, strip
from selfplay.steering.pareto import plot_fronts

Encode = Callable[[Messages], list[int]]


@dataclass
class Judgement:
    """What a judge says of P prompts' responses."""

    scores: list[torch.Tensor]  # (P,) of (K, K) log-odds
    rewards: list[torch.Tensor] = field(default_factory=list)  # (P,) of (K, m) attribute rewards; [] without

    def probabilities(self) -> list[torch.Tensor]:
        return [torch.sigmoid(s) for s in self.scores]


class PreferenceJudge:
    """K x K log-odds from a preference model; prompts are used as they are."""

    directional = False  # no directions in the system prompts

    def training_prompts(self, prompts: list[Messages], ids: list[list[int]], encode: Encode,
                         rng: random.Random) -> tuple[list[Messages], list[list[int]], Optional[list[Direction]]]:
        return prompts, ids, None

    def evaluation_prompts(self, prompts: list[Messages]) -> tuple[list[Messages], Optional[list[Direction]]]:
        return prompts, None

    def judge(self, workers: Workers, prompts: list[Messages], responses: list[list[str]],
              directions: Optional[list[Direction]], cfg: DictConfig) -> Judgement:
        return self.verdict(self.scoring(workers, prompts, len(responses[0]), cfg).all(responses), directions)

    def scoring(self, workers: Workers, prompts: list[Messages], k: int, cfg: DictConfig) -> Scoring:
        """The K x K log-odds of these prompts' K responses, each chunk sent once its responses are added."""
        return Scoring(workers, "score", prompts, k, cfg)

    def verdict(self, scored: list[torch.Tensor], directions: Optional[list[Direction]]) -> Judgement:
        """The judgement of what ``scoring`` collected."""
        return Judgement(scored)

    def prompt_of_units(self, units: int) -> list[int]:
        """The held-out prompt each evaluation unit comes from: here each unit is one prompt."""
        return list(range(units))

    def fronts(self, rewards: list[torch.Tensor], directions: Optional[list[Direction]], n: int,
               lengths: Optional[list[list[int]]], prefix: str = "") -> dict:
        return {}

    def oracle(self, oracle: Oracle, texts: list[str], responses: list[list[str]],
               directions: Optional[list[Direction]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The oracle's P(y_i > y_j | x) for the same responses; no attribute labels."""
        return [torch.tensor(oracle.preferences(x, r)) for x, r in zip(texts, responses)], []

    def save(self, checkpoint: Path) -> None:
        pass

    def plot(self, run_dir: Path) -> None:
        pass


class DirectionalJudge:
    """Rewards along each prompt's direction (``steering.directional.Steering`` holds the directions)."""

    directional = True  # directions in the system prompts: the policy must be one that reads them

    def __init__(self, steering: Steering):
        self.steering = steering

    def training_prompts(self, prompts: list[Messages], ids: list[list[int]], encode: Encode,
                         rng: random.Random) -> tuple[list[Messages], list[list[int]], Optional[list[Direction]]]:
        """Each prompt ``directions.per_prompt`` times, each with a freshly drawn direction in its system prompt."""
        conditioned, directions = self.steering.training_units(prompts, rng)
        return conditioned, [encode(m) for m in conditioned], directions

    def evaluation_prompts(self, prompts: list[Messages]) -> tuple[list[Messages], Optional[list[Direction]]]:
        """Every held-out prompt with every grid direction."""
        return self.steering.evaluation_units(prompts)

    def judge(self, workers: Workers, prompts: list[Messages], responses: list[list[str]],
              directions: Optional[list[Direction]], cfg: DictConfig) -> Judgement:
        return self.verdict(self.scoring(workers, prompts, len(responses[0]), cfg).all(responses), directions)

    def scoring(self, workers: Workers, prompts: list[Messages], k: int, cfg: DictConfig) -> Scoring:
        """The (K, m) rewards of these prompts' K responses, read without the directions in their system prompts,
        each chunk sent once its responses are added."""
        return Scoring(workers, "rewards", [strip(p) for p in prompts], k, cfg)

    def verdict(self, rewards: list[torch.Tensor], directions: Optional[list[Direction]]) -> Judgement:
        """S = v^T (r_i - r_j) / tau per prompt, from what ``scoring`` collected, and the rewards."""
        return Judgement([self.steering.scores(r, v) for r, v in zip(rewards, directions)], rewards)

    def prompt_of_units(self, units: int) -> list[int]:
        """The held-out prompt each evaluation unit comes from: a prompt's units are its grid directions, in a
        row (``Steering.evaluation_units``)."""
        return [u // len(self.steering.grid) for u in range(units)]

    def fronts(self, rewards: list[torch.Tensor], directions: Optional[list[Direction]], n: int,
               lengths: Optional[list[list[int]]], prefix: str = "") -> dict:
        """The current policy's front (its first n responses per unit) and the initial policy's (the next n);
        none from rewards over other attributes than the reward model's (``rewards == []``)."""
        if not rewards:
            return {}
        s = self.steering
        out = front_metrics([r[:n] for r in rewards], directions, s.grid, s.names, s.reference, lengths, prefix)
        out.update(front_metrics([r[n:2 * n] for r in rewards], directions, s.grid, s.names, s.reference, None,
                                 f"{prefix}initial_"))
        return out

    def oracle(self, oracle: Oracle, texts: list[str], responses: list[list[str]],
               directions: Optional[list[Direction]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The oracle's probabilities from its attribute labels, scalarised like the reward model's, and the
        labels themselves (none when the oracle's attributes are not the reward model's)."""
        truth = [torch.tensor([oracle.attributes(x, y) for y in r]) for x, r in zip(texts, responses)]
        probs = [torch.sigmoid(self.steering.scores(a, v)) for a, v in zip(truth, directions)]
        return probs, truth if list(oracle.names) == self.steering.names else []

    def save(self, checkpoint: Path) -> None:
        save_attributes(checkpoint, self.steering.names)

    def plot(self, run_dir: Path) -> None:
        """pareto.png (the scorer's fronts) and, with an oracle, pareto_oracle.png: the initial policy's front
        and one per iteration so far."""
        records = read_metrics(run_dir)
        for prefix, name in (("", "pareto.png"), ("oracle_", "pareto_oracle.png")):
            if f"{prefix}front" in records[0]:
                fronts = [("initial", records[0][f"{prefix}initial_front"])]
                fronts += [(f"iter {r['iteration']}", r[f"{prefix}front"]) for r in records]
                plot_fronts(fronts, self.steering.names, run_dir / name, reference=self.steering.reference)


Judge = PreferenceJudge | DirectionalJudge
