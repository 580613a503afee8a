"""The two batch types that travel between actors.

A ``Rollout`` goes generator -> scorer -> algorithm: P prompts with K sampled
responses each, and (after scoring) one K x K log-odds matrix per prompt.  A
``TrainBatch`` goes algorithm -> learner: one row per training sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from selfplay.generation import Sample
from selfplay.modeling import Messages


@dataclass
class Rollout:
    prompts: list[Messages]  # (P,)
    prompt_ids: list[list[int]]  # (P,) chat-templated prompt tokens
    samples: list[list[Sample]]  # (P, K)
    scores: list[torch.Tensor] = field(default_factory=list)  # (P,) of (K, K): s(y_i > y_j | x) / tau

    def texts(self) -> list[list[str]]:
        return [[s.text for s in group] for group in self.samples]

    def num_tokens(self) -> int:
        return sum(len(s.response_ids) for group in self.samples for s in group)


@dataclass
class TrainBatch:
    prompt_ids: list[list[int]]  # (N,)
    response_ids: list[list[int]]  # (N,)
    targets: torch.Tensor  # (N,) what the algorithm's loss regresses or ranks on
    old_logps: torch.Tensor | None = None  # (N,) log pi_t(y|x), filled once by the learner

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def select(self, idx: list[int]) -> "TrainBatch":
        return TrainBatch(
            [self.prompt_ids[i] for i in idx],
            [self.response_ids[i] for i in idx],
            self.targets[idx],
            None if self.old_logps is None else self.old_logps[idx],
        )
