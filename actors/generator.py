"""Generator actor: holds one inference engine (vLLM or transformers) for the whole run."""

from __future__ import annotations

import ray

from selfplay.policy.engines import make_generator


@ray.remote
class Generator:
    def __init__(self, backend: str, model: str, tokenizer: str, cfg, dtype: str, seed: int, sleep_mode: bool = False):
        self.engine = make_generator(backend, model, tokenizer, cfg, dtype, seed, sleep_mode)

    def generate(self, prompt_ids, n, temperature, top_p, max_new_tokens, seed):
        return self.engine.generate(prompt_ids, n, temperature, top_p, max_new_tokens, seed)

    def load_bucket(self, bucket) -> None:
        self.engine.load_bucket(bucket)

    def finish_sync(self) -> None:
        self.engine.finish_sync()

    def sleep(self, level: int) -> None:
        self.engine.sleep(level)

    def wake_up(self) -> None:
        self.engine.wake_up()

    def engine_starts(self) -> int:
        return self.engine.engine_starts
