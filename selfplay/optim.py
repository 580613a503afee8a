"""The plain optimisation loop shared by the world's SFT warm start and preference-model training."""

from __future__ import annotations

from typing import Callable

import torch


def minimize(
    model: torch.nn.Module,
    step_loss: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    schedule: Callable[[int], float],
    max_grad_norm: float = 1.0,
) -> list[float]:
    """AdamW over `steps` steps of ``step_loss(step)``, lr scaled by ``schedule(step)``, gradients clipped.

    Leaves the model in eval mode; returns the loss of every step.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses = []
    for step in range(steps):
        loss = step_loss(step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses
