"""GPO ([GPM]; docs/methods.md §4): the square loss against the sampling policy pi_t, targets s_hat / beta,
on every response or on A.2's (best, worst) pair.  Its objective is SPPO's too."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.algorithms.examples import ALL, square_batch
from selfplay.algorithms.losses import square_loss
from selfplay.algorithms.selection import row_means
from selfplay.algorithms.unit import Algorithm, LossInputs, positive
from selfplay.core.batch import Batch


@dataclass
class GpoConfig:
    beta: float = 2.0  # targets s_hat / beta
    pairs: str = "all"  # all (every response) | best_worst (docs/methods.md §A.2's pair)
    reference: str = "previous"  # pi_t, the sampling policy


def gpo_targets(scores: torch.Tensor, beta: float) -> torch.Tensor:
    """(1/beta) * s_hat(y_i > pi_t | x), s_hat_i = (1/K) sum_k S[i, k] (docs/methods.md §4).  scores (K, K) -> (K,)."""
    return row_means(scores) / beta


def build_gpo(rollout: Batch, cfg: DictConfig, rng: random.Random | None = None) -> Batch:
    return square_batch(rollout, cfg, lambda s: (s, gpo_targets(s, cfg.beta)))


def square_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``square_loss`` averaged over an example's rows: for a pair, A.2's [(a_w - t_w)^2 + (a_l - t_l)^2] / 2."""
    residual = (x.logps - x.ref_logps - x.targets).detach()
    metrics = {"mean_target": x.targets.mean().item(), "abs_residual": residual.abs().mean().item()}
    return square_loss(x.logps, x.ref_logps, x.targets).mean(dim=1), metrics


UNIT = Algorithm("gpo", GpoConfig, build_gpo, square_objective, (ALL, "best_worst"), ("previous",), on_policy=True,
                 refuse=lambda cfg: positive(cfg, "beta"))
