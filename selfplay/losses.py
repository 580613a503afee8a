"""Losses as plain functions on per-sequence log-probs: per-example losses out, the caller reduces."""

from __future__ import annotations

import torch


def gpo_loss(policy_logps: torch.Tensor, old_logps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """General Preference Optimization, seed 004 eq. 5.7 with log Z replaced by 0:

        ( log(pi_theta(y|x) / pi_t(y|x)) - (1/beta) * s_hat(y > pi_t | x) )^2

    ``targets`` holds (1/beta) * s_hat (see ``algorithms.gpo_targets``).  All inputs (N,); returns (N,).
    """
    return (policy_logps - old_logps - targets) ** 2
