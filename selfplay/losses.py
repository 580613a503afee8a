"""Losses as plain functions on per-sequence log-probs: per-example losses out, the caller reduces."""

from __future__ import annotations

import torch


def gpo_loss(policy_logps: torch.Tensor, old_logps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """General Preference Optimization, seed 004 eq. 5.7 with log Z replaced by 0:

        ( log(pi_theta(y|x) / pi_t(y|x)) - (1/beta) * s_hat(y > pi_t | x) )^2

    ``targets`` holds (1/beta) * s_hat (see ``algorithms.gpo_targets``).  All inputs (N,); returns (N,).
    """
    return (policy_logps - old_logps - targets) ** 2


def preference_nll(logits: torch.Tensor) -> torch.Tensor:
    """Preference-model loss on pairs, METHODS 2.1 (BT) and 2.2 (GPM):

        -log sigmoid(z),   z = r_w - r_l (BT)  or  s(y_w > y_l | x) / tau (GPM)

    ``logits`` (B,) are the log-odds that the chosen response wins; returns (B,).
    """
    return -torch.nn.functional.logsigmoid(logits)


def order_robust_nll(f_wl: torch.Tensor, f_lw: torch.Tensor) -> torch.Tensor:
    """The pairwise baseline's loss with each pair shown in both orders:

        ( -log sigmoid f(x, y_w, y_l) - log sigmoid(-f(x, y_l, y_w)) ) / 2

    so the model learns P(A > B) from either position.  Inputs (B,); returns (B,).
    """
    return (preference_nll(f_wl) + preference_nll(-f_lw)) / 2
