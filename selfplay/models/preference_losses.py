"""Preference-model losses: plain functions on tensors, each beside its equation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def preference_nll(logits: torch.Tensor) -> torch.Tensor:
    """Preference-model loss on pairs, docs/methods.md §2.1 (BT) and 2.2 (GPM):

        -log sigmoid(z),   z = r_w - r_l (BT)  or  s(y_w > y_l | x) / tau (GPM)

    ``logits`` (B,) are the log-odds that the chosen response wins; returns (B,).
    """
    return -F.logsigmoid(logits)


def order_robust_nll(f_wl: torch.Tensor, f_lw: torch.Tensor) -> torch.Tensor:
    """The pairwise baseline's loss with each pair shown in both orders:

        ( -log sigmoid f(x, y_w, y_l) - log sigmoid(-f(x, y_l, y_w)) ) / 2

    so the model learns P(A > B) from either position.  Inputs (B,); returns (B,).
    """
    return (preference_nll(f_wl) + preference_nll(-f_lw)) / 2


def masked_mse_loss(pred: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The multi-objective reward model's regression loss, docs/methods.md §2.3 ([DPA] sec. 2.1), over observed labels:

        sum_{(b, a) observed} (pred[b, a] - labels[b, a])^2 / #observed

    A missing label is masked, not read as zero: it adds nothing to the sum or the count.  ``labels`` may
    hold NaN where ``mask`` is False; they are replaced before the subtraction, so no NaN reaches the value
    or the gradient.  Unlike the pair losses above this returns the scalar mean, because the count of
    observed labels is over the whole batch, not per example.  ``pred``, ``labels`` (B, m), ``mask`` (B, m)
    bool; raises ValueError if no label is observed.
    """
    mask = mask.bool()
    observed = int(mask.sum())
    if observed == 0:
        raise ValueError("masked_mse_loss: no observed label in the batch (every entry of mask is False)")
    target = torch.where(mask, labels, torch.zeros_like(labels))
    squared = torch.where(mask, (pred - target) ** 2, torch.zeros_like(pred))
    return squared.sum() / observed
