"""Losses as plain functions on per-sequence log-probs: per-example losses out, the caller reduces.

Notation (METHODS 4-6): logp = log pi_theta(y|x) summed over response tokens
(EOS included, prompt masked); ref = the reference model's; h = logp - ref.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def square_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The square loss of GPO and SPPO, against the sampling policy pi_t:

        ( log(pi_theta(y|x) / pi_t(y|x)) - target )^2

    GPO (seed 004 eq. 5.7, log Z = 0): target = (1/beta) * s_hat(y > pi_t | x).
    SPPO (METHODS 5): target = eta * (P_hat(y > pi_t | x) - 1/2).
    ``targets`` come from ``algorithms``.  All inputs (N,); returns (N,).
    """
    return (policy_logps - ref_logps - targets) ** 2


def dpo_loss(h_w: torch.Tensor, h_l: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (METHODS 6): -log sigma( beta (h_w - h_l) ).  Inputs (B,); returns (B,)."""
    return -F.logsigmoid(beta * (h_w - h_l))


def ipo_loss(h_w: torch.Tensor, h_l: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (METHODS 6): ( h_w - h_l - 1/(2 tau) )^2.  Inputs (B,); returns (B,)."""
    return (h_w - h_l - 1.0 / (2.0 * tau)) ** 2


def simpo_loss(
    logp_w: torch.Tensor, logp_l: torch.Tensor, len_w: torch.Tensor, len_l: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """SimPO (METHODS 6), no reference model, length-normalised:

        -log sigma( beta/|y_w| logp_theta(y_w|x) - beta/|y_l| logp_theta(y_l|x) - gamma )

    ``len_*`` count response tokens (EOS included).  Inputs (B,); returns (B,).
    """
    return -F.logsigmoid(beta * logp_w / len_w - beta * logp_l / len_l - gamma)


def preference_nll(logits: torch.Tensor) -> torch.Tensor:
    """Preference-model loss on pairs, METHODS 2.1 (BT) and 2.2 (GPM):

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
    """The multi-objective reward model's regression loss, METHODS 2.3 (seed 003 sec. 2.1), over observed labels:

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


def sft_loss(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """DPA's fine-tuning step, METHODS 3 (seed 003 sec. 2.2, step 2): maximise log pi_theta(y* | x, v), as
    the per-token next-token loss

        L = -log pi_theta(y* | x, v) / |y*|

    (prompt and system-prompt tokens masked; EOS counted in |y*|).  Inputs (B,); returns (B,).
    """
    return -logps / lengths
