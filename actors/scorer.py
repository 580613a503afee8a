"""Scorer actor: holds the preference model (any kind)."""

from __future__ import annotations

import ray

from selfplay.core.lm import ModelTrust
from selfplay.models.preference_scorer import load_scorer


@ray.remote
class ScoringWorker:
    def __init__(self, kind: str, model: str, batch_size: int, k: int | None, tau: float, tokenizer: str, device: str,
                 trust: ModelTrust = ModelTrust(), dtype: str = "auto", attributes=None, aggregate: str = "none",
                 source: str = "last_turn", template: str | None = None):
        self.scorer = load_scorer(kind, model, batch_size, k=k, tau=tau, tokenizer=tokenizer, device=device,
                                  trust=trust, dtype=dtype, attributes=attributes, aggregate=aggregate, source=source,
                                  template=template)

    def score(self, prompts, responses):
        return self.scorer.score(prompts, responses)

    def rewards(self, prompts, responses):
        """A multi-objective model's (K_p, m) attribute rewards per prompt (``selfplay.models.preference_scorer.Scorer.rewards``)."""
        return self.scorer.rewards(prompts, responses)
