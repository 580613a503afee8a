"""SPPO (docs/methods.md §5): GPO's square loss with targets eta (P_hat - 1/2), or A.2's hard pair recipe."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.algorithms.examples import ALL, square_batch
from selfplay.algorithms.gpo import square_objective
from selfplay.algorithms.selection import row_means
from selfplay.algorithms.unit import Algorithm, positive
from selfplay.core.batch import Batch


@dataclass
class SppoConfig:
    eta: float = 4.0  # targets eta * (P_hat - 1/2) (the released scripts' 1/beta)
    hard: bool = False  # the pair recipe p_w = 1, p_l = 0 (docs/methods.md §A.2)
    pairs: str = "all"  # all | best_worst
    reference: str = "previous"


def sppo_targets(probs: torch.Tensor, eta: float) -> torch.Tensor:
    """eta * (P_hat(y_i > pi_t | x) - 1/2), P_hat_i = (1/K) sum_k P[i, k] (docs/methods.md §5).  probs (K, K) -> (K,)."""
    return eta * (row_means(probs) - 0.5)


def build_sppo(rollout: Batch, cfg: DictConfig, rng: random.Random | None = None) -> Batch:
    def rank_and_targets(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.sigmoid(scores)
        targets = sppo_targets(probs, cfg.eta)
        if cfg.hard:  # p_w -> 1, p_l -> 0 (docs/methods.md §A.2): targets +-eta/2 for the chosen / rejected row
            p = row_means(probs)
            targets = torch.full_like(p, -cfg.eta / 2)
            targets[p.argmax()] = cfg.eta / 2
        return probs, targets

    return square_batch(rollout, cfg, rank_and_targets)


def refuse(cfg: DictConfig) -> list[str]:
    hard = (["algo.hard=true is SPPO's pair recipe (p_w = 1, p_l = 0): set algo.pairs=best_worst"]
            if cfg.hard and cfg.pairs == ALL else [])
    return hard + positive(cfg, "eta")


UNIT = Algorithm("sppo", SppoConfig, build_sppo, square_objective, (ALL, "best_worst"), ("previous",),
                 on_policy=True, refuse=refuse)
