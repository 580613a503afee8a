"""The one batch type that travels between actors: groups of (prompt, response) rows.

A ``Batch`` is G groups, each with one prompt (its id, messages, templated
tokens) and ``group`` response rows, stored row-major (rows ``g * group`` ..
``(g + 1) * group - 1`` belong to group g).  The same type serves every stage:

- ``take_prompts`` makes one group per prompt of the iteration, no rows yet;
- ``with_samples`` adds the generators' K responses per prompt (``group = K``);
  the judge adds one K x K log-odds matrix per group (``scores``) and, with a
  multi-objective reward model, the K x m attribute rewards;
- an algorithm turns that into its training examples, one group each:
  ``group = 1`` (GPO/SPPO's all-K form, DPA) or 2 (chosen, rejected), each group
  keeping the id of the prompt it came from; DPA's memory-replay rows become
  groups of their own (id ``replay/<i>``);
- the learner reads rows, fills ``ref_logps`` and trains on ``select``-ed groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from selfplay.core.lm import Messages


@dataclass
class Sample:
    """One generated response, as a generator returns it."""

    response_ids: list[int]  # sampled tokens, EOS included when the response finished
    text: str  # decoded response, special tokens removed
    finished: bool  # ended with EOS rather than the token limit


@dataclass
class Batch:
    # ---- per group (G,) ----
    uids: list[str]  # the prompt's id, "<iteration>/<position in the iteration's prompts>" (replay: "replay/<i>")
    prompt_ids: list[list[int]]  # chat-templated prompt tokens
    prompts: list[Messages] = field(default_factory=list)  # the messages (rollouts; training batches leave it empty)
    directions: list[tuple[float, ...]] | None = None  # unit vectors in R^m in the system prompts (multi-objective)
    scores: list[torch.Tensor] = field(default_factory=list)  # (K, K): s(y_i > y_j | x) / tau
    rewards: list[torch.Tensor] = field(default_factory=list)  # (K, m): r(x, y_i), 0-100
    replay: list[tuple[list[int], list[int]]] = field(default_factory=list)  # DPA: (prompt ids, response ids) to mix in
    # ---- per row (N = G * group,) ----
    group: int = 1  # rows per group
    response_ids: list[list[int]] = field(default_factory=list)  # EOS included when the response finished
    texts: list[str] = field(default_factory=list)  # decoded responses (rollouts only)
    targets: torch.Tensor | None = None  # what a square loss regresses on (pair losses ignore it)
    # Whose log-probs the loss compares with: "previous" (pi_t, the sampling policy), "initial" (pi_0) or None
    # (no reference model).  The learner fills ref_logps once per iteration, before training.
    reference: str | None = "previous"
    ref_logps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.uids) != len(self.prompt_ids):
            raise ValueError(f"a Batch needs one id per prompt; got {len(self.uids)} ids and "
                             f"{len(self.prompt_ids)} prompts")
        if self.response_ids and len(self.response_ids) != self.group * len(self.prompt_ids):
            raise ValueError(f"a Batch needs whole groups of {self.group} rows; got {len(self.response_ids)} responses "
                             f"for {len(self.prompt_ids)} prompts")

    @classmethod
    def examples(cls, uids: list[str], prompt_ids: list[list[int]], response_ids: list[list[int]],
                 targets: torch.Tensor, group: int, reference: str | None) -> Batch:
        """A training batch: one group per example, ``group`` rows each."""
        return cls(uids, prompt_ids, group=group, response_ids=response_ids, targets=targets, reference=reference)

    def __len__(self) -> int:
        """The number of groups (prompts of a rollout, examples of a training batch)."""
        return len(self.prompt_ids)

    def with_samples(self, samples: list[list[Sample]]) -> Batch:
        """This batch with each prompt's generated responses as its rows (K per prompt)."""
        k = len(samples[0]) if samples else 0
        if len(samples) != len(self) or any(len(g) != k for g in samples):
            raise ValueError(f"expected {k} samples for each of {len(self)} prompts, got {[len(g) for g in samples]}")
        return replace(self, group=k, response_ids=[s.response_ids for g in samples for s in g],
                       texts=[s.text for g in samples for s in g])

    def rows(self, g: int) -> range:
        """The row indices of group g."""
        return range(g * self.group, (g + 1) * self.group)

    def grouped(self, values: list) -> list[list]:
        """A per-row list cut into its groups: (N,) -> (G, group)."""
        return [values[g * self.group:(g + 1) * self.group] for g in range(len(self))]

    def row_prompt_ids(self) -> list[list[int]]:
        """The prompt tokens of every row.  (N,)"""
        return [p for p in self.prompt_ids for _ in range(self.group)]

    def num_tokens(self) -> int:
        return sum(len(r) for r in self.response_ids)

    def lengths(self) -> torch.Tensor:
        """|y| per row: response tokens, EOS included.  (N,)"""
        return torch.tensor([len(r) for r in self.response_ids], dtype=torch.float32)

    def select(self, groups: list[int]) -> Batch:
        """The training part of these groups (rows, targets, reference log-probs), in this order."""
        rows = [i for g in groups for i in self.rows(g)]
        part = Batch.examples([self.uids[g] for g in groups], [self.prompt_ids[g] for g in groups],
                              [self.response_ids[i] for i in rows], self.targets[rows], self.group, self.reference)
        part.ref_logps = None if self.ref_logps is None else self.ref_logps[rows]
        return part
