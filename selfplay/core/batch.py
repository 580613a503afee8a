"""The two batch types that travel between actors.

A ``Rollout`` goes generator -> scorer -> algorithm: P prompts with K sampled
responses each, and (after scoring) one K x K log-odds matrix per prompt.  With a
multi-objective reward model each prompt also carries its preference direction v
(already in its system prompt) and the K x m attribute rewards; DPA's rollout
carries the memory-replay rows too.  A
``TrainBatch`` goes algorithm -> learner: training *examples* of ``group``
sequences each (1 for GPO/SPPO's all-K form, 2 = (chosen, rejected) for pairs),
stored as rows, example-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from selfplay.core.lm import Messages


@dataclass
class Sample:
    response_ids: list[int]  # sampled tokens, EOS included when the response finished
    text: str  # decoded response, special tokens removed
    finished: bool  # ended with EOS rather than the token limit


@dataclass
class Rollout:
    prompts: list[Messages]  # (P,)
    prompt_ids: list[list[int]]  # (P,) chat-templated prompt tokens
    samples: list[list[Sample]]  # (P, K)
    scores: list[torch.Tensor] = field(default_factory=list)  # (P,) of (K, K): s(y_i > y_j | x) / tau
    directions: list[tuple[float, ...]] | None = None  # (P,) unit vectors in R^m (multi-objective scorer)
    rewards: list[torch.Tensor] = field(default_factory=list)  # (P,) of (K, m): r(x, y_i), 0-100
    replay: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (prompt ids, response ids)

    def texts(self) -> list[list[str]]:
        return [[s.text for s in group] for group in self.samples]

    def num_tokens(self) -> int:
        return sum(len(s.response_ids) for group in self.samples for s in group)


@dataclass
class TrainBatch:
    prompt_ids: list[list[int]]  # (N,) rows
    response_ids: list[list[int]]  # (N,) rows, EOS included when the response finished
    targets: torch.Tensor  # (N,) what a square loss regresses on (pair losses ignore it)
    group: int = 1  # rows per training example
    # Whose log-probs the loss compares with: "previous" (pi_t, the sampling policy), "initial" (pi_0) or
    # None (no reference model).  The learner fills ref_logps once per iteration, before training.
    reference: str | None = "previous"
    ref_logps: torch.Tensor | None = None  # (N,)

    def __post_init__(self) -> None:
        if len(self.prompt_ids) != len(self.response_ids) or len(self.prompt_ids) % self.group:
            raise ValueError(f"a TrainBatch needs whole examples of {self.group} rows; got "
                             f"{len(self.prompt_ids)} prompts and {len(self.response_ids)} responses")

    def __len__(self) -> int:
        """The number of training examples."""
        return len(self.prompt_ids) // self.group

    def lengths(self) -> torch.Tensor:
        """|y| per row: response tokens, EOS included.  (N,)"""
        return torch.tensor([len(r) for r in self.response_ids], dtype=torch.float32)

    def select(self, examples: list[int]) -> "TrainBatch":
        rows = [e * self.group + g for e in examples for g in range(self.group)]
        return TrainBatch(
            [self.prompt_ids[i] for i in rows],
            [self.response_ids[i] for i in rows],
            self.targets[rows],
            self.group,
            self.reference,
            None if self.ref_logps is None else self.ref_logps[rows],
        )
