"""DPA ([DPA]; docs/methods.md §3): per (prompt, direction v) the response argmax_i v^T r_i, plus replay rows,
fine-tuned with the next-token loss.  Needs directions (a multi-objective scorer); no reference model."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.algorithms.examples import BEST_OF_N, rejection_sample
from selfplay.algorithms.unit import Algorithm, LossInputs
from selfplay.core.batch import Batch

INITS = ("sft", "previous")  # where each iteration's fine-tuning starts


@dataclass
class DpaConfig:
    replay: float = 0.15  # share of the fine-tuning data from data.replay
    init: str = "sft"  # each iteration starts from sft (pi_0; [DPA]) | previous
    pairs: str = "best_of_n"


def build_dpa(rollout: Batch, cfg: DictConfig, rng: random.Random | None = None) -> Batch:
    """(system prompt with v, x) -> y* for every (prompt, direction) of the rollout, then the replay rows."""
    uids, prompt_ids, response_ids = list(rollout.uids), list(rollout.prompt_ids), []
    for responses, rewards, v in zip(rollout.grouped(rollout.response_ids), rollout.rewards, rollout.directions):
        response_ids.append(responses[rejection_sample(rewards, v)])
    for i, (p_ids, r_ids) in enumerate(rollout.replay):
        uids.append(f"replay/{i}")
        prompt_ids.append(p_ids)
        response_ids.append(r_ids)
    return Batch.examples(uids, prompt_ids, response_ids, torch.zeros(len(prompt_ids)), 1, None)


def sft_loss(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """DPA's fine-tuning step, docs/methods.md §3 ([DPA] sec. 2.2, step 2): maximise log pi_theta(y* | x, v), as
    the per-token next-token loss

        L = -log pi_theta(y* | x, v) / |y*|

    (prompt and system-prompt tokens masked; EOS counted in |y*|).  Inputs (B,); returns (B,).
    """
    return -logps / lengths


def sft_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    loss = sft_loss(x.logps[:, 0], x.lengths[:, 0])
    return loss, {"nll_per_token": loss.detach().mean().item()}


def refuse(cfg: DictConfig) -> list[str]:
    out = []
    if not 0.0 <= cfg.replay < 1.0:
        out.append(f"algo.replay is the replay share of the fine-tuning data, in [0, 1), got {cfg.replay}")
    if cfg.init not in INITS:
        out.append(f"algo.init must be one of {INITS}, got '{cfg.init}'")
    return out


UNIT = Algorithm("dpa", DpaConfig, build_dpa, sft_objective, (BEST_OF_N,), needs_directions=True, refuse=refuse)
