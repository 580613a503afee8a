"""Generator actor: holds one inference engine (vLLM or transformers) for the whole run."""

from __future__ import annotations

import ray

from actors.group import wait_named
from selfplay.core.lm import ModelTrust
from selfplay.policy.engines import make_generator


@ray.remote
class GenerationWorker:
    def __init__(self, backend: str, model: str, tokenizer: str, cfg, dtype: str, seed: int, sleep_mode: bool = False,
                 weight_transfer: str | None = None, code_bias: bool = False, trust: ModelTrust = ModelTrust()):
        self.engine = make_generator(backend, model, tokenizer, cfg, dtype, seed, sleep_mode, weight_transfer,
                                     code_bias, trust)

    def generate(self, prompt_ids, n, temperature, top_p, max_new_tokens, seed, codes=None):
        extra = {} if codes is None else {"codes": codes}  # LPC's code weights per prompt
        return self.engine.generate(prompt_ids, n, temperature, top_p, max_new_tokens, seed, **extra)

    def load_bucket(self, bucket) -> None:
        self.engine.load_bucket(bucket)

    def finish_sync(self) -> None:
        self.engine.finish_sync()

    def set_code_table(self, table) -> None:
        self.engine.set_code_table(table)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.engine.init_weight_transfer_engine(init_info)

    def start_weight_update(self) -> None:
        self.engine.start_weight_update()

    def update_weights(self, update_info) -> None:
        self.engine.update_weights(update_info)

    def finish_weight_update(self) -> None:
        self.engine.finish_weight_update()

    def sleep(self, level: int) -> None:
        self.engine.sleep(level)

    def wake_up(self) -> None:
        self.engine.wake_up()

    def engine_starts(self) -> int:
        return self.engine.engine_starts


class GeneratorsClient:
    """vLLM's ``VLLMWeightSyncClient`` over our generator actors: each call goes to every generator and waits at
    most ``timeout_s``, and the error names the generator that did not answer.

    Each engine numbers its workers from 0, so generator i's workers join the NCCL group at
    ``rank_offset + i * ranks_each`` (vLLM's own Ray client sends every engine the same offset, which only works
    for data-parallel ranks of one engine)."""

    def __init__(self, generators: list, ranks_each: int, timeout_s: float):
        self.generators, self.ranks_each, self.timeout_s = generators, ranks_each, timeout_s
        self.names = [f"generator {i}" for i in range(len(generators))]

    def _all(self, refs: list, what: str) -> None:
        wait_named(refs, self.names, self.timeout_s, what)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        infos = [{**init_info, "rank_offset": init_info["rank_offset"] + i * self.ranks_each}
                 if "rank_offset" in init_info else init_info for i in range(len(self.generators))]
        self._all([g.init_weight_transfer_engine.remote(info) for g, info in zip(self.generators, infos)],
                  "weight transfer rendezvous")

    def start_weight_update(self) -> None:
        self._all([g.start_weight_update.remote() for g in self.generators], "weight sync (start)")

    def update_weights(self, update_info: dict | list) -> None:
        self._all([g.update_weights.remote(update_info) for g in self.generators], "weight sync")

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all([g.finish_weight_update.remote() for g in self.generators], "weight sync (finish)")
