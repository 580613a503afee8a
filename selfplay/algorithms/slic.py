"""SLiC-HF's calibration loss (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
arXiv 2305.10425, eq. 1) on reference log-ratios, as TRL's ``loss_type="hinge"`` writes it: a hinge with
margin 1/beta on h_w - h_l (docs/methods.md §6.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.algorithms.examples import build_pairs
from selfplay.algorithms.selection import PAIR_STRATEGIES
from selfplay.algorithms.unit import Algorithm, LossInputs, log_ratios, pair_metrics, positive


@dataclass
class SlicConfig:
    beta: float = 0.1  # the hinge's slope; the margin it asks of h_w - h_l is 1 / beta (SLiC's delta)
    pairs: str = "best_worst"
    reference: str = "initial"  # initial (pi_0) | previous (pi_{t-1})


def slic_loss(h_w: torch.Tensor, h_l: torch.Tensor, beta: float) -> torch.Tensor:
    """max(0, 1 - beta (h_w - h_l)), h = log pi_theta(y|x) - log pi_ref(y|x).

    SLiC-HF's eq. 1 is max(0, delta - log pi_theta(y_w|x) + log pi_theta(y_l|x)), without a reference; TRL's
    hinge (``relu(1 - beta * logits)``, logits the difference of the two log-ratios) takes the log-ratios
    against the reference, as the RSO paper (Liu et al. 2023, arXiv 2309.06657) does, and beta = 1 / delta.
    This is TRL's form, max(0, 1 - beta d) = beta max(0, delta - d) for d = h_w - h_l: SLiC's hinge on the
    log-ratio difference, scaled by beta, zero once the margin delta is met.  Inputs (B,); returns (B,).
    """
    return torch.relu(1.0 - beta * (h_w - h_l))


def slic_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    h_w, h_l = log_ratios(x)
    return slic_loss(h_w, h_l, cfg.beta), pair_metrics(cfg.beta * h_w, cfg.beta * h_l)


UNIT = Algorithm("slic", SlicConfig, build_pairs, slic_objective, PAIR_STRATEGIES, ("initial", "previous"),
                 refuse=lambda cfg: positive(cfg, "beta"))
