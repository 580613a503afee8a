"""Self-play algorithms, registered by name: how a scored rollout becomes a TrainBatch,
and which loss trains on it.  The loop looks an algorithm up; it never branches on one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from omegaconf import DictConfig

from selfplay.batch import Rollout, TrainBatch
from selfplay.losses import gpo_loss


def gpo_targets(scores: torch.Tensor, beta: float) -> torch.Tensor:
    """(1/beta) * s_hat(y_i > pi_t | x), s_hat_i = (1/K) sum_k S[i, k] (METHODS 4).  scores (K, K) -> (K,)."""
    return scores.mean(dim=1) / beta


def build_gpo(rollout: Rollout, cfg: DictConfig) -> TrainBatch:
    """Every one of the K responses of every prompt is a training row (the all-K form)."""
    prompt_ids, response_ids, targets = [], [], []
    for p_ids, samples, scores in zip(rollout.prompt_ids, rollout.samples, rollout.scores):
        targets.append(gpo_targets(scores, cfg.beta))
        for s in samples:
            prompt_ids.append(p_ids)
            response_ids.append(s.response_ids)
    return TrainBatch(prompt_ids, response_ids, torch.cat(targets))


@dataclass(frozen=True)
class Algorithm:
    build: Callable[[Rollout, DictConfig], TrainBatch]
    # (policy_logps, old_logps, targets) -> per-example losses
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


ALGORITHMS: dict[str, Algorithm] = {
    "gpo": Algorithm(build=build_gpo, loss=gpo_loss),
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo.name '{name}' (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]
