"""DPO (docs/methods.md §6): -log sigma(beta (h_w - h_l)) on (chosen, rejected) pairs, against pi_0 or pi_t."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from selfplay.algorithms.examples import build_pairs
from selfplay.algorithms.selection import PAIR_STRATEGIES
from selfplay.algorithms.unit import Algorithm, LossInputs, log_ratios, pair_metrics, positive


@dataclass
class DpoConfig:
    beta: float = 0.1  # the KL weight: the implicit reward is beta h
    pairs: str = "best_worst"  # best_worst | best_random | all_pairs (at most max_pairs per prompt)
    reference: str = "initial"  # initial (pi_0) | previous (pi_{t-1})


def dpo_loss(h_w: torch.Tensor, h_l: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (docs/methods.md §6): -log sigma( beta (h_w - h_l) ).  Inputs (B,); returns (B,)."""
    return -F.logsigmoid(beta * (h_w - h_l))


def dpo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    h_w, h_l = log_ratios(x)
    return dpo_loss(h_w, h_l, cfg.beta), pair_metrics(cfg.beta * h_w, cfg.beta * h_l)


UNIT = Algorithm("dpo", DpoConfig, build_pairs, dpo_objective, PAIR_STRATEGIES, ("initial", "previous"),
                 codable=True, refuse=lambda cfg: positive(cfg, "beta"))  # LPC-DPO: [LPC] eq. 8
