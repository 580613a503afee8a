"""The losses several algorithms share, as plain functions on per-sequence log-probs (each algorithm's own loss
lives in its module, ``selfplay.algorithms.<name>``): per-example losses out, the caller reduces.

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


def categorical_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p) = sum_k q_k (log q_k - log p_k) between the categoricals softmax(q_logits) and softmax(p_logits),
    the regulariser of [LPC] eqs. 8, 13 and 14 (posterior against prior).  Inputs (B, C); returns (B,)."""
    log_q, log_p = F.log_softmax(q_logits, dim=-1), F.log_softmax(p_logits, dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)
