"""Robust DPO (Chowdhury, Kini & Natarajan, "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
ICML 2024, arXiv 2403.00409): DPO de-biased for preference labels flipped at a known rate eps (docs/methods.md
§6.2; TRL's ``loss_type="robust"`` with ``label_smoothing`` = eps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.algorithms.dpo import dpo_loss
from selfplay.algorithms.examples import build_pairs
from selfplay.algorithms.selection import PAIR_STRATEGIES
from selfplay.algorithms.unit import Algorithm, LossInputs, log_ratios, pair_metrics, positive


@dataclass
class RdpoConfig:
    beta: float = 0.1  # DPO's beta
    eps: float = 0.1  # the rate at which a pair's preference label is flipped, in [0, 1/2)
    pairs: str = "best_worst"
    reference: str = "initial"  # initial (pi_0) | previous (pi_{t-1})


def rdpo_loss(h_w: torch.Tensor, h_l: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """The rDPO loss, the de-biased DPO loss of arXiv 2403.00409 sec. 3 (its equation number not checked here: the
    stored copies gave only the abstract), with l(z) = -log sigma(z) and h = h_w - h_l:

        L = [ (1 - eps) l(beta h) - eps l(-beta h) ] / (1 - 2 eps)

    Its expectation over a label flipped with probability eps is DPO's loss on the true label (the paper's
    unbiasedness).  TRL's ``robust`` loss is the same expression, with ``label_smoothing`` = eps.
    eps = 0 is DPO.  Inputs (B,); returns (B,) (negative where the margin is large: the correction term).
    """
    return ((1 - eps) * dpo_loss(h_w, h_l, beta) - eps * dpo_loss(h_l, h_w, beta)) / (1 - 2 * eps)


def rdpo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    h_w, h_l = log_ratios(x)
    return rdpo_loss(h_w, h_l, cfg.beta, cfg.eps), pair_metrics(cfg.beta * h_w, cfg.beta * h_l)


def refuse(cfg: DictConfig) -> list[str]:
    flips = ([] if 0.0 <= cfg.eps < 0.5 else
             [f"algo.eps is the label-flip rate, in [0, 0.5) (at 0.5 the labels carry nothing), got {cfg.eps}"])
    return positive(cfg, "beta") + flips


UNIT = Algorithm("rdpo", RdpoConfig, build_pairs, rdpo_objective, PAIR_STRATEGIES, ("initial", "previous"),
                 refuse=refuse)
