"""SimPO (docs/methods.md §6): length-normalised log-likelihood margin, no reference model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from selfplay.algorithms.examples import build_pairs
from selfplay.algorithms.selection import PAIR_STRATEGIES
from selfplay.algorithms.unit import Algorithm, LossInputs, pair_metrics


@dataclass
class SimpoConfig:
    beta: float = 2.0  # scales the length-normalised log-likelihood
    gamma: float = 1.0  # target margin
    pairs: str = "best_worst"


def simpo_loss(
    logp_w: torch.Tensor, logp_l: torch.Tensor, len_w: torch.Tensor, len_l: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """SimPO (docs/methods.md §6), no reference model, length-normalised:

        -log sigma( beta/|y_w| logp_theta(y_w|x) - beta/|y_l| logp_theta(y_l|x) - gamma )

    ``len_*`` count response tokens (EOS included).  Inputs (B,); returns (B,).
    """
    return -F.logsigmoid(beta * logp_w / len_w - beta * logp_l / len_l - gamma)


def simpo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    r = cfg.beta * x.logps / x.lengths  # SimPO's implicit reward
    loss = simpo_loss(x.logps[:, 0], x.logps[:, 1], x.lengths[:, 0], x.lengths[:, 1], cfg.beta, cfg.gamma)
    return loss, pair_metrics(r[:, 0], r[:, 1])


UNIT = Algorithm("simpo", SimpoConfig, build_pairs, simpo_objective, PAIR_STRATEGIES, codable=True)  # [LPC] eq. 13
