"""The plain optimisation loop shared by the world's SFT warm start and preference-model training."""

from __future__ import annotations

import math
from collections.abc import Callable

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


def lr_multiplier(total_steps: int, warmup_steps: int, kind: str) -> Callable[[int], float]:
    """The learning-rate factor at each step (``LambdaLR``): linear warm-up from 1/warmup to 1 over
    ``warmup_steps``, then ``constant``, ``linear`` decay to 0 or half a ``cosine`` to 0 at ``total_steps``."""
    decay = {
        "constant": lambda frac: 1.0,
        "linear": lambda frac: 1.0 - frac,
        "cosine": lambda frac: 0.5 * (1.0 + math.cos(math.pi * frac)),
    }[kind]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay((step - warmup_steps) / max(1, total_steps - warmup_steps))

    return factor
