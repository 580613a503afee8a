"""Weight sync at the size of a 1B model, on the CPU (issue 14, part 3): buckets against the alternatives.

    python bench/sync.py [--hidden 2048] [--layers 16] [--intermediate 8192] [--bucket-mb 256] [--repeats 3]

A randomly initialised Llama shaped like a 1B model (hidden 2048, 16 layers, MLP 8192, 32 heads of 64, 8 KV
heads; the embedded world's tokenizer and vocabulary, float32 as vLLM on the CPU wants) is served by the run's
own Generator actor (vLLM) and trained by its own learner group (one rank), both started from different random
weights.  Then:

- **buckets**: the run's ``sync_weights`` (``selfplay.loop.stages``), whole layers in buckets of
  ``--bucket-mb`` through Ray's object store, loaded in place, the prefix cache reset; ``--repeats`` times;
- **one call per tensor**: the same tensors, one Ray call and one in-place load per tensor (the pattern of
  open-instruct #1535; timed from tensors already packed, so the learner's side is not counted against it);
- **restart**: the learner writes its checkpoint, the engine is stopped and a new one started on it.

While the buckets go, a thread samples the resident memory (RSS) of the learner and the generator processes
every few milliseconds; it prints each one's peak over its steady state just before (goal: at most 1.3).
The generator's greedy tokens after the bucketed sync must equal those of the engine restarted on the
learner's checkpoint, or the bench stops.  Prints seconds and the ratios restart / buckets and
per-tensor / buckets.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path


class RssPeak:
    """Peak resident memory of some processes (by pid, from /proc) while it runs, sampled every ``every_s``."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.002):
        self.pids, self.every_s = pids, every_s
        self.steady = {name: rss(pid) for name, pid in pids.items()}
        self.peak = dict(self.steady)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss(pid))
            time.sleep(self.every_s)

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rss(pid: int) -> int:
    """Resident bytes of process ``pid``."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def actor_pid(actor) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def write_model(path: Path, tokenizer_dir: str, args: argparse.Namespace, seed: int) -> None:
    """A random Llama of the bench's shape, saved as a Hugging Face directory with the world's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfplay.core.lm import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=max(1, args.hidden // 256), head_dim=64, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)


def greedy(generator, prompt_ids: list[list[int]]) -> list[list[int]]:
    import ray

    groups = ray.get(generator.generate.remote(prompt_ids, 1, 0.0, 1.0, 16, 0))
    return [g[0].response_ids for g in groups]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--bucket-mb", type=float, default=256.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ray

    from actors.generator import GenerationWorker
    from actors.learner import LearnerGroup
    from selfplay.config.loading import load_config
    from selfplay.core.lm import encode_prompt, load_tokenizer
    from selfplay.data.prompts import load_prompts
    from selfplay.loop.sync import sync_weights
    from selfplay.loop.workers import Workers
    from selfplay.policy.object_store_sync import Bucket
    from selfplay.policy.specs import GeneratorSpec, LearnerSpec, plain
    from selfplay.world.build import get_world

    cfg = load_config(["generator.backend=vllm", f"sync.bucket_mb={args.bucket_mb}"])
    world = get_world(cfg.world)
    tok = load_tokenizer(world.tokenizer)
    prompts = [encode_prompt(tok, p) for p in load_prompts(world.prompts)[:4]]

    with tempfile.TemporaryDirectory() as tmp:
        served, trained, saved = Path(tmp) / "served", Path(tmp) / "trained", Path(tmp) / "saved"
        write_model(served, world.tokenizer, args, seed=0)
        write_model(trained, world.tokenizer, args, seed=1)
        params = sum(f.stat().st_size for f in trained.glob("*.safetensors")) / 4
        print(f"model: {params / 1e9:.2f} B parameters (float32, {params * 4 / 2**30:.1f} GiB), "
              f"hidden {args.hidden}, {args.layers} layers; buckets of {args.bucket_mb:g} MiB")

        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}

        def start_generator(model: Path):
            return GenerationWorker.options(num_cpus=0, runtime_env={"env_vars": threads}).remote(
                replace(GeneratorSpec.of(cfg, str(model), str(model)), dtype="float32", seed=0))

        generator = start_generator(served)
        learner = LearnerGroup.start(LearnerSpec(str(trained), str(trained), "float32", plain(cfg.train),
                                                 plain(cfg.algo), 0), threads)
        ray.get([generator.__ray_ready__.remote(), *learner.ready])
        workers = Workers([generator], None, learner)
        pids = {"learner": actor_pid(learner.ranks[0]), "generator": actor_pid(generator)}
        before = greedy(generator, prompts)

        # one call per tensor: the tensors packed layer by layer first, then one round trip each
        n_layers = ray.get(learner.ranks[0].plan_sync.remote(1))
        singles = []
        for i in range(n_layers):
            bucket = ray.get(learner.ranks[0].weight_bucket.remote(i))
            for meta, offset in bucket.entries:
                singles.append(ray.put(Bucket(bucket.data[offset:offset + meta.nbytes].copy(), [(meta, 0)])))
            del bucket
        start = time.perf_counter()
        for one in singles:
            ray.get(generator.load_bucket.remote(one))
        ray.get(generator.finish_sync.remote())
        per_tensor = time.perf_counter() - start
        del singles

        bucket_times, peaks = [], []
        for _ in range(args.repeats):
            with RssPeak(pids) as memory:
                start = time.perf_counter()
                n_buckets = sync_weights(workers, cfg)
                bucket_times.append(time.perf_counter() - start)
            peaks.append(memory)
        synced = greedy(generator, prompts)

        start = time.perf_counter()
        ray.get(learner.save(str(saved)))
        save_s = time.perf_counter() - start
        ray.kill(generator)
        start = time.perf_counter()
        generator = start_generator(saved)
        ray.get(generator.__ray_ready__.remote())
        start_s = time.perf_counter() - start
        restarted = greedy(generator, prompts)
        ray.shutdown()

    if synced != restarted:
        raise SystemExit("the bucketed sync left the engine with other weights than the learner's checkpoint")
    if synced == before:
        raise SystemExit("the generator's output did not change: the sync moved nothing")
    best = min(bucket_times)
    restart = save_s + start_s
    print(f"buckets: {n_buckets} per sync, {', '.join(f'{t:.2f}' for t in bucket_times)} s (best {best:.2f} s); "
          f"greedy output equals the restarted engine's")
    print(f"one call per tensor: {per_tensor:.2f} s; restart: {restart:.2f} s "
          f"(checkpoint {save_s:.2f} s + engine start {start_s:.2f} s)")
    print(f"ratio one call per tensor / buckets: {per_tensor / best:.2f}")
    print(f"ratio restart / buckets: {restart / best:.2f}")
    for name in pids:
        worst = max(peaks, key=lambda p: p.peak[name] / p.steady[name])
        steady, peak = worst.steady[name], worst.peak[name]
        print(f"{name} RSS: steady {steady / 2**30:.2f} GiB, peak during sync {peak / 2**30:.2f} GiB, "
              f"ratio {peak / steady:.2f} (goal <= 1.3; the worst of the syncs)")


if __name__ == "__main__":
    main()
