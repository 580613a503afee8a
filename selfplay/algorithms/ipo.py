"""IPO (Azar et al. 2023, arXiv 2310.12036; docs/methods.md §6): the square loss on the log-ratio margin."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.algorithms.examples import build_pairs
from selfplay.algorithms.selection import PAIR_STRATEGIES
from selfplay.algorithms.unit import Algorithm, LossInputs, pair_metrics, positive


@dataclass
class IpoConfig:
    tau: float = 0.5  # target margin 1/(2 tau) of the log-ratio difference
    length_normalize: bool = True  # average each log-ratio over its response tokens (TRL's form) or sum it
    pairs: str = "best_worst"
    reference: str = "initial"


def ipo_loss(h_w: torch.Tensor, h_l: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, arXiv 2310.12036, eq. 17; docs/methods.md §6): ( h_w - h_l - 1/(2 tau) )^2.

    ``h`` is a sequence's log-ratio: summed over its tokens, or (TRL's form, which ``ipo_objective`` uses by
    default) averaged over them.  Inputs (B,); returns (B,).
    """
    return (h_w - h_l - 1.0 / (2.0 * tau)) ** 2


def ipo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``ipo_loss`` on each response's log-ratio averaged over its tokens (``algo.length_normalize``, TRL's
    IPO, the form the IPO authors confirmed to TRL), or summed over them; rewards are those log-ratios."""
    h = x.logps - x.ref_logps
    if cfg.length_normalize:
        h = h / x.lengths
    return ipo_loss(h[:, 0], h[:, 1], cfg.tau), pair_metrics(h[:, 0], h[:, 1])


UNIT = Algorithm("ipo", IpoConfig, build_pairs, ipo_objective, PAIR_STRATEGIES, ("initial", "previous"),
                 codable=True, refuse=lambda cfg: positive(cfg, "tau"))  # LPC-IPO: [LPC] eq. 14
