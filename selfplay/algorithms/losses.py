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

    GPO ([GPM] eq. 5.7, log Z = 0): target = (1/beta) * s_hat(y > pi_t | x).
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
    """DPA's fine-tuning step, docs/methods.md §3 ([DPA] sec. 2.2, step 2): maximise log pi_theta(y* | x, v), as
    the per-token next-token loss

        L = -log pi_theta(y* | x, v) / |y*|

    (prompt and system-prompt tokens masked; EOS counted in |y*|).  Inputs (B,); returns (B,).
    """
    return -logps / lengths


def categorical_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p) = sum_k q_k (log q_k - log p_k) between the categoricals softmax(q_logits) and softmax(p_logits),
    the regulariser of [LPC] eqs. 8, 13 and 14 (posterior against prior).  Inputs (B, C); returns (B,)."""
    log_q, log_p = F.log_softmax(q_logits, dim=-1), F.log_softmax(p_logits, dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def lpc_dpo_loss(h_w: torch.Tensor, h_l: torch.Tensor, kl: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """LPC-DPO, [LPC] eq. 8, one posterior sample z:

        -log sigma( beta (h_w(z) - h_l(z)) ) + lambda KL(q || p)

    ``h_*(z)`` = log pi_theta(y_*|x, z) - log pi_ref(y_*|x) (the reference is not conditioned on z).
    Inputs (B,); returns (B,)."""
    return dpo_loss(h_w, h_l, beta) + lam * kl


def lpc_ipo_loss(h_w: torch.Tensor, h_l: torch.Tensor, kl: torch.Tensor, tau: float, lam: float) -> torch.Tensor:
    """LPC-IPO, [LPC] eq. 14: ( h_w(z) - h_l(z) - 1/(2 tau) )^2 + lambda KL(q || p).  Inputs (B,); returns (B,)."""
    return ipo_loss(h_w, h_l, tau) + lam * kl


def lpc_simpo_loss(logp_w: torch.Tensor, logp_l: torch.Tensor, len_w: torch.Tensor, len_l: torch.Tensor,
                   kl: torch.Tensor, beta: float, gamma: float, lam: float) -> torch.Tensor:
    """LPC-SimPO, [LPC] eq. 13:

        -log sigma( beta/|y_w| logp_theta(y_w|x, z) - beta/|y_l| logp_theta(y_l|x, z) - gamma ) + lambda KL(q || p)

    Inputs (B,); returns (B,)."""
    return simpo_loss(logp_w, logp_l, len_w, len_l, beta, gamma) + lam * kl
