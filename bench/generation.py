"""Generation and weight-sync speed on the embedded world, as ratios within one process.

    python bench/generation.py [--prompts 128] [--k 4]

Prints tokens/s of the vLLM and transformers backends (ratio vLLM / HF), and the
time of an in-place weight load against an engine restart (ratio restart / load).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()

    from omegaconf import OmegaConf

    from selfplay.config.schema import Config
    from selfplay.core.lm import encode_prompt, load_causal_lm, load_tokenizer
    from selfplay.data.prompts import load_prompts
    from selfplay.policy.engines import make_generator
    from selfplay.policy.object_store_sync import TensorMeta, pack
    from selfplay.policy.specs import GeneratorSpec
    from selfplay.world.build import get_world

    cfg = OmegaConf.structured(Config)
    world = get_world(cfg.world)
    tok = load_tokenizer(world.policy)
    ids = [encode_prompt(tok, p) for p in load_prompts(world.prompts)[: args.prompts]]

    def spec(backend: str) -> GeneratorSpec:
        return replace(GeneratorSpec.of(cfg, world.policy, world.policy), backend=backend, dtype="float32", seed=0)

    rates = {}
    engines = {}
    for backend in ("hf", "vllm"):
        engines[backend] = gen = make_generator(spec(backend))
        gen.generate(ids[:8], 2, 1.0, 1.0, args.max_new_tokens, 0)  # warm-up
        start = time.perf_counter()
        out = gen.generate(ids, args.k, 1.0, 1.0, args.max_new_tokens, 1)
        seconds = time.perf_counter() - start
        rates[backend] = sum(len(s.response_ids) for g in out for s in g) / seconds
        print(f"{backend:5s} {rates[backend]:9.0f} tokens/s ({len(ids)} prompts x {args.k})")
    print(f"ratio vllm / hf: {rates['vllm'] / rates['hf']:.2f}")

    weights = load_causal_lm(world.policy).state_dict()  # one bucket of every tensor, as the sync sends it
    bucket = pack([TensorMeta(n, t.dtype, tuple(t.shape)) for n, t in weights.items()], weights.__getitem__)
    vllm = engines["vllm"]
    reps = 20
    start = time.perf_counter()
    for _ in range(reps):
        vllm.load_bucket(bucket)
        vllm.finish_sync()
    load_s = (time.perf_counter() - start) / reps
    del engines["vllm"], vllm
    start = time.perf_counter()
    make_generator(spec("vllm"))
    restart_s = time.perf_counter() - start
    print(f"in-place weight load {load_s * 1e3:.1f} ms; engine restart {restart_s:.2f} s; "
          f"ratio restart / load: {restart_s / load_s:.0f}")


if __name__ == "__main__":
    main()
