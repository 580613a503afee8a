"""Generator actor: holds one inference engine (vLLM or transformers) for the whole run, built from its
``GeneratorSpec``; its verbs are the engine's (``selfplay.policy.verbs.TransferEngine``)."""

from __future__ import annotations

from actors.roles import Group, shell
from selfplay.policy.verbs import TransferEngine

GenerationWorker = shell("GenerationWorker", TransferEngine, "selfplay.policy.engines:make_generator", module=__name__)


def generator_group(generators: list) -> Group:
    """The generators called as one, each named ``generator i``."""
    return Group(TransferEngine, generators, [f"generator {i}" for i in range(len(generators))])


class GeneratorsClient:
    """vLLM's ``VLLMWeightSyncClient`` over our generator actors: each call goes to every generator and waits at
    most ``timeout_s``, and the error names the generator that did not answer.

    Each engine numbers its workers from 0, so generator i's workers join the NCCL group at
    ``rank_offset + i * ranks_each`` (vLLM's own Ray client sends every engine the same offset, which only works
    for data-parallel ranks of one engine)."""

    def __init__(self, generators: list, ranks_each: int, timeout_s: float):
        self.generators, self.ranks_each, self.timeout_s = generator_group(generators), ranks_each, timeout_s

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        infos = [({**init_info, "rank_offset": init_info["rank_offset"] + i * self.ranks_each},)
                 if "rank_offset" in init_info else (init_info,) for i in range(len(self.generators.members))]
        self.generators.wait(self.generators.each("init_weight_transfer_engine", infos), self.timeout_s,
                             "weight transfer rendezvous")

    def start_weight_update(self) -> None:
        self.generators.wait(self.generators.start_weight_update(), self.timeout_s, "weight sync (start)")

    def update_weights(self, update_info: dict | list) -> None:
        self.generators.wait(self.generators.update_weights(update_info), self.timeout_s, "weight sync")

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.generators.wait(self.generators.finish_weight_update(), self.timeout_s, "weight sync (finish)")
