"""Latent Preference Coding ([LPC], sec. 3.3; docs/methods.md §6) as a wrapper unit: over a pair loss that
[LPC] gives a coded form of (the unit's ``codable`` trait: dpo, ipo, simpo), the same examples and the same
loss on the z-conditioned log-probs, plus lambda KL(q || p):

    LPC-DPO (eq. 8), LPC-SimPO (eq. 13), LPC-IPO (eq. 14):  L_base(h_w(z), h_l(z)) + lambda KL(q || p)

``algo.lpc`` holds its settings; ``codes`` > 0 turns it on.  The heads themselves are ``selfplay.policy.lpc``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig

from selfplay.algorithms.unit import Algorithm, LossInputs

SCHEDULES = ("iteration", "run")  # what g rises over
INFERENCE = ("mean", "sample")


@dataclass
class LpcSettings:
    """Latent Preference Coding ([LPC]) on dpo / ipo / simpo: ``codes`` > 0 turns it on (docs/methods.md §6)."""

    codes: int = 0  # C, the codebook's size ([LPC] finds 32-64 best); 0: off
    lam: float = 0.05  # lambda, the weight of KL(q || p)
    mlp_hidden: Optional[int] = None  # the prior's and posterior's hidden width; None: the policy's hidden size
    init_std: float = 1.0  # the codebook's initial entries ~ N(0, init_std^2); 0: z starts at the origin
    lr: Optional[float] = None  # the heads' (codebook, prior, posterior) learning rate; None: train.lr
    gumbel_tau: float = 1.0  # the Gumbel-softmax temperature
    g_over: str = "iteration"  # g rises 0 -> 1 over each iteration's training | over the whole run
    inference: str = "mean"  # z at generation: the prior's expected code (mean) | one drawn from it (sample)


def coded(loss: torch.Tensor, kl: torch.Tensor, lam: float) -> torch.Tensor:
    """[LPC] eqs. 8, 13, 14: a pair loss on the z-conditioned log-ratios plus lambda KL(q || p).  (B,) -> (B,)."""
    return loss + lam * kl


def wrap(base: Algorithm) -> Algorithm:
    """``base`` with latent codes: its examples and checks, its loss on z-conditioned log-probs plus lambda KL."""

    def objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = base.objective(x, cfg)
        return coded(loss, x.kl, cfg.lpc.lam), {**metrics, "lpc_kl": x.kl.detach().mean().item()}

    return dataclasses.replace(base, objective=objective, coded=True)


def refuse(cfg: DictConfig, base: Algorithm, codable: list[str]) -> list[str]:
    """What ``algo.lpc`` refuses in the ``algo`` section ``cfg`` of ``base``; ``codable``: the units LPC can wrap."""
    lpc, out = cfg.lpc, []
    if lpc.codes < 0:
        out.append(f"algo.lpc.codes is the codebook's size (0: off), got {lpc.codes}")
    if lpc.codes and not base.codable:
        out.append(f"algo.lpc applies to the pair losses {'/'.join(codable)}, not to {base.name}")
    if lpc.lam < 0:
        out.append(f"algo.lpc.lam weighs KL(q || p) and must be >= 0, got {lpc.lam}")
    if lpc.lr is not None and not lpc.lr > 0:
        out.append(f"algo.lpc.lr must be > 0 (or unset: train.lr), got {lpc.lr}")
    if lpc.init_std < 0:
        out.append(f"algo.lpc.init_std is the codebook's initial standard deviation, >= 0, got {lpc.init_std}")
    if not lpc.gumbel_tau > 0:
        out.append(f"algo.lpc.gumbel_tau must be > 0, got {lpc.gumbel_tau}")
    if lpc.mlp_hidden is not None and lpc.mlp_hidden < 1:
        out.append(f"algo.lpc.mlp_hidden must be >= 1 (or unset), got {lpc.mlp_hidden}")
    if lpc.g_over not in SCHEDULES:
        out.append(f"algo.lpc.g_over must be one of {SCHEDULES}, got '{lpc.g_over}'")
    if lpc.inference not in INFERENCE:
        out.append(f"algo.lpc.inference must be one of {INFERENCE}, got '{lpc.inference}'")
    return out
