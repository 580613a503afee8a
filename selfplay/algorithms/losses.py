"""Losses as plain functions on per-sequence log-probs: per-example losses out, the caller reduces.

Notation (docs/methods.md §4-6): logp = log pi_theta(y|x) summed over response tokens
(EOS included, prompt masked); ref = the reference model's; h = logp - ref.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def square_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The square loss of GPO and SPPO, against the sampling policy pi_t:

        ( log(pi_theta(y|x) / pi_t(y|x)) - target )^2

    GPO (seed 004 eq. 5.7, log Z = 0): target = (1/beta) * s_hat(y > pi_t | x).
    SPPO (docs/methods.md §5): target = eta * (P_hat(y > pi_t | x) - 1/2).
    ``targets`` come from ``algorithms``.  All inputs (N,); returns (N,).
    """
    return (policy_logps - ref_logps - targets) ** 2


def dpo_loss(h_w: torch.Tensor, h_l: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (docs/methods.md §6): -log sigma( beta (h_w - h_l) ).  Inputs (B,); returns (B,)."""
    return -F.logsigmoid(beta * (h_w - h_l))


def ipo_loss(h_w: torch.Tensor, h_l: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, arXiv 2310.12036, eq. 17; docs/methods.md §6): ( h_w - h_l - 1/(2 tau) )^2.

    ``h`` is a sequence's log-ratio: summed over its tokens, or (TRL's form, which ``ipo_objective`` uses by
    default) averaged over them.  Inputs (B,); returns (B,).
    """
    return (h_w - h_l - 1.0 / (2.0 * tau)) ** 2


def simpo_loss(
    logp_w: torch.Tensor, logp_l: torch.Tensor, len_w: torch.Tensor, len_l: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """SimPO (docs/methods.md §6), no reference model, length-normalised:

        -log sigma( beta/|y_w| logp_theta(y_w|x) - beta/|y_l| logp_theta(y_l|x) - gamma )

    ``len_*`` count response tokens (EOS included).  Inputs (B,); returns (B,).
    """
    return -F.logsigmoid(beta * logp_w / len_w - beta * logp_l / len_l - gamma)


def sft_loss(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """DPA's fine-tuning step, docs/methods.md §3 (seed 003 sec. 2.2, step 2): maximise log pi_theta(y* | x, v), as
    the per-token next-token loss

        L = -log pi_theta(y* | x, v) / |y*|

    (prompt and system-prompt tokens masked; EOS counted in |y*|).  Inputs (B,); returns (B,).
    """
    return -logps / lengths
