"""Scorer actor: holds the preference model."""

from __future__ import annotations

import ray

from selfplay.scoring import make_scorer


@ray.remote
class Scorer:
    def __init__(self, kind: str, model: str, tau: float, batch_size: int, device: str):
        self.scorer = make_scorer(kind, model, tau, batch_size, device)

    def score(self, prompts, responses):
        return self.scorer.score(prompts, responses)
