"""Each role's verbs, declared once (issue 28): the calls the driver may make of a generator and of a learner.

A Protocol here is the one list of a role's verbs.  The library classes implement it (``VLLMGenerator`` and
``HFGenerator`` the engine's, ``PolicyTrainer`` the learner's); the Ray shell that holds one of them
(``actors.roles.shell``) forwards exactly these verbs, and the group that calls every member at once
(``actors.roles.Group``) offers exactly these, so adding a verb is: declare it here, implement it in the
library class.  The scorer's verbs are declared beside it (``selfplay.models.preference_scorer.Scoring``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from selfplay.core.batch import Batch, Sample
from selfplay.policy.object_store_sync import Bucket


class GenerationEngine(Protocol):
    """A generator's engine (``selfplay.policy.engines``): sampling, weights loaded in place, colocated sleep."""

    engine_starts: int  # how many times the engine was started (one per generator per run)

    def generate(self, prompt_ids: list[list[int]], n: int, temperature: float, top_p: float,
                 max_new_tokens: int, seed: int, codes: torch.Tensor | None = None) -> list[list[Sample]]:
        """n samples for each prompt (chat-templated token ids); ``codes``: LPC's code weights per prompt."""

    def load_bucket(self, bucket: Bucket) -> None:
        """Load one bucket of Hugging Face-named tensors into the running engine."""

    def finish_sync(self) -> None:
        """After the last bucket of a weight sync."""

    def set_code_table(self, table: torch.Tensor) -> None:
        """LPC: W E (C, V), each code's logit shift."""

    def sleep(self, level: int) -> None:
        """Colocated mode: free the device (level 1: weights to host memory; level 2: drop them)."""

    def wake_up(self) -> None:
        """Back on the device after ``sleep``."""


class WeightTransfer(Protocol):
    """vLLM's native weight transfer (``sync.transport=nccl|ipc``, ``selfplay.policy.vllm_transfer``): what the
    learner's rank 0 drives through ``actors.generator.GeneratorsClient``.  Only ``VLLMGenerator`` has it
    (``make_generator`` refuses a transfer for the hf backend)."""

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        """Join the transfer group."""

    def start_weight_update(self) -> None:
        """Before a round of weights."""

    def update_weights(self, update_info: dict | list) -> None:
        """Receive one round of weights."""

    def finish_weight_update(self) -> None:
        """After the round: the new weights serve."""


class TransferEngine(GenerationEngine, WeightTransfer, Protocol):
    """A generation engine with vLLM's native weight transfer: the generator actor's verbs."""


class Learner(Protocol):
    """The learner (``selfplay.policy.trainer.PolicyTrainer``): one process, or one rank of a sharded group."""

    def begin_iteration(self, batch: Batch) -> dict[str, float]:
        """Cache the reference log-probs; restart the optimizer and the schedule."""

    def train_epoch(self, epoch: int, iteration: int) -> dict[str, float]:
        """One pass over the cached batch."""

    def plan_sync(self, bucket_bytes: int) -> int:
        """Plan the weight buckets; their number."""

    def weight_bucket(self, i: int) -> Bucket | None:
        """Bucket i, packed on rank 0."""

    def prompt_codes(self, prompt_ids: list[list[int]], inference: str, seed: int) -> torch.Tensor:
        """LPC: each prompt's code weights from the prior."""

    def code_table(self) -> torch.Tensor:
        """LPC: W E, each code's logit shift."""

    def connect_generators(self, transport: str, client, engine_ranks: int, bucket_bytes: int, address: str | None,
                           dtype: torch.dtype | None) -> None:
        """Rendezvous with the generators for vLLM's native weight transfer."""

    def send_weights(self) -> int:
        """The current weights to every generator over the connected transport."""

    def save(self, path: str | Path) -> None:
        """A Hugging Face checkpoint."""
