"""Learner actor: holds the policy and its optimizer."""

from __future__ import annotations

import ray

from selfplay.policy.learner import Learner as LearnerImpl


@ray.remote
class Learner:
    def __init__(self, model: str, tokenizer: str, dtype: str, train, algo, seed: int, initial: str | None = None):
        self.learner = LearnerImpl(model, tokenizer, dtype, train, algo, seed, initial)

    def begin_iteration(self, batch):
        return self.learner.begin_iteration(batch)

    def train_epoch(self, epoch: int, iteration: int):
        return self.learner.train_epoch(epoch, iteration)

    def weights(self):
        return self.learner.weights()

    def save(self, path: str) -> None:
        self.learner.save(path)
