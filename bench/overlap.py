"""Overlap (issue 29, part 2): the staged rollout against the streamed one (``run.stream``), in one run of the bench.

    python bench/overlap.py [--iterations 5] [--warmup 1] [--repeats 2] [--preset smoke] [--set key=value ...]
                            [--actor-threads N] [--run-dir DIR]

Runs the real entry point, ``selfplay.run.main``, once per mode in this process, on one local Ray cluster the
bench starts itself: **staged** (``run.stream=false``: generate every prompt, then score) and **streamed**
(``run.stream=true``: each chunk of ``scorer.batch_size`` sequences goes to the scorer as soon as all its
prompts are generated, and is scored while the next chunks generate); ``--repeats`` times, the modes in turn
(the machine's noise then falls on both).  Every run has the same config, seed and machine, so their metrics
lines must be equal but for the timings (exit 1 if not).

The default size (``SIZE``: 256 prompts x 4 responses of at most 8 tokens, the HF generator, 4 generation
chunks of 64 prompts, 16 scoring chunks of 16 prompts) is one where generation and scoring cost about the same
on this 2-core machine; ``--set`` overrides it.
Each actor gets ``OMP_NUM_THREADS`` = the CPU count (``selfplay.run.start_workers``): streamed, the generator and
the scorer then compete for the same cores.  ``--actor-threads N`` starts the actors with N threads each
instead (the bench makes ``os.cpu_count`` answer N while ``start_workers`` runs).

Per iteration it reads the stage seconds of the metrics lines: the **rollout** is ``generate_s + score_s``
(streamed, ``score_s`` is only what is left to score after the last chunk is generated), the **iteration** the
sum of every stage's seconds (the keys ending in ``_s``, not the rates ``*_per_s``).  It prints one Markdown
row per mode (means over every repeat's iterations after ``--warmup``), each iteration's ratio staged /
streamed (the same repeat's) and the mean ratios; and writes everything to ``RUN/overlap.json``.  Another
mode (one-step-off generation) is one more entry of ``MODES``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from unittest import mock

# generation and scoring about equal here (2026-12-07, staged, one thread per actor: 0.70 s and 0.59 s)
SIZE = ["data.prompts_per_iter=256", "generator.backend=hf", "generator.max_new_tokens=8", "scorer.batch_size=64",
        "eval.prompts=16", "eval.samples=1", "train.epochs=1"]
MODES = {"staged": ["run.stream=false"], "streamed": ["run.stream=true"]}  # the first is the baseline
TIMINGS = ("_s", "tokens_per_s")


def stage_seconds(record: dict) -> dict[str, float]:
    return {k: v for k, v in record.items() if k.endswith("_s") and not k.endswith("_per_s")}


def rollout_s(record: dict) -> float:
    return record["generate_s"] + record["score_s"]


def iteration_s(record: dict) -> float:
    return sum(stage_seconds(record).values())


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith(TIMINGS)}


@contextmanager
def actor_threads(n: int | None) -> Iterator[None]:
    """While ``selfplay.run.start_workers`` runs, ``os.cpu_count()`` answers ``n``: each actor's OMP_NUM_THREADS."""
    import selfplay.run as entry

    if n is None:
        yield
        return
    real = entry.start_workers

    def start_workers(*args, **kwargs):
        with mock.patch.object(os, "cpu_count", lambda: n):
            return real(*args, **kwargs)

    with mock.patch.object(entry, "start_workers", start_workers):
        yield


def run_mode(argv: list[str], threads: int | None) -> list[dict]:
    import selfplay.run as entry
    from selfplay.core.checkpoint import read_metrics

    print(f"overlap: python -m selfplay.run {' '.join(argv)}", flush=True)
    with actor_threads(threads):
        rc = entry.main(argv)
    if rc != 0:
        raise SystemExit(f"the run exited {rc}")
    return read_metrics(Path(argv[1].split("=", 1)[1]))


def table(runs: dict[str, list[list[dict]]], warmup: int) -> dict:
    """Means per mode over each repeat's iterations after ``warmup``, and each iteration's ratio to the first
    mode's in the same repeat."""
    base_name, base = next(iter(runs.items()))
    out: dict = {"modes": {}, "ratios": {}}
    print(f"\niterations {warmup + 1}..{len(base[0])} of {len(base)} repeat(s), means (s):\n")
    print("| mode | generate | score | rollout | iteration (stages) | rollout ratio | iteration ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, repeats in runs.items():
        pairs = [(b, r) for base_run, run in zip(base, repeats) for b, r in zip(base_run[warmup:], run[warmup:])]
        kept = [r for _, r in pairs]
        rollout = [rollout_s(b) / rollout_s(r) for b, r in pairs]
        iteration = [iteration_s(b) / iteration_s(r) for b, r in pairs]
        means = {key: statistics.mean(r[key] for r in kept) for key in ("generate_s", "score_s")}
        means |= {"rollout_s": statistics.mean(map(rollout_s, kept)),
                  "iteration_s": statistics.mean(map(iteration_s, kept))}
        out["modes"][name] = {"means": means, "stage_seconds": [[stage_seconds(r) for r in run] for run in repeats]}
        out["ratios"][name] = {"rollout": rollout, "iteration": iteration}
        print(f"| {name} | {means['generate_s']:.2f} | {means['score_s']:.2f} | {means['rollout_s']:.2f} | "
              f"{means['iteration_s']:.2f} | {statistics.mean(rollout):.2f}x | {statistics.mean(iteration):.2f}x |")
    for name in list(runs)[1:]:
        r = out["ratios"][name]
        print(f"\n{base_name} / {name}, per iteration: rollout {', '.join(f'{x:.2f}' for x in r['rollout'])}; "
              f"iteration {', '.join(f'{x:.2f}' for x in r['iteration'])}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="first iterations left out of the means")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each mode, the modes in turn")
    ap.add_argument("--preset", default="smoke", help="a preset of configs/; '' for none")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override passed to both runs, after SIZE (repeatable)")
    ap.add_argument("--actor-threads", type=int, default=None, help="OMP_NUM_THREADS per actor; default: CPUs")
    ap.add_argument("--run-dir", default=None, help="default: a new temporary directory (kept)")
    args = ap.parse_args()
    if not 0 <= args.warmup < args.iterations or args.repeats < 1:
        ap.error("--warmup must be >= 0 and less than --iterations, --repeats >= 1")

    import ray

    root = Path(args.run_dir or tempfile.mkdtemp(prefix="overlap-")).resolve()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    runs: dict[str, list[list[dict]]] = {name: [] for name in MODES}
    try:
        for repeat in range(args.repeats):
            for name, mode in MODES.items():
                argv = [f"iter={args.iterations}", f"run.dir={root / f'{name}-{repeat}'}", "run.progress=false",
                        *([args.preset] if args.preset else []), *SIZE, *args.set, *mode]
                runs[name].append(run_mode(argv, args.actor_threads))
    finally:
        ray.shutdown()

    summary = table(runs, args.warmup)
    base = [without_timings(r) for r in runs["staged"][0]]
    same = {name: all([without_timings(r) for r in records] == base for records in repeats)
            for name, repeats in runs.items()}
    print("\nmetrics but the timings equal the staged run's: "
          + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in same.items()))
    out = root / "overlap.json"
    out.write_text(json.dumps({"argv_size": SIZE + args.set, "iterations": args.iterations, "warmup": args.warmup,
                               "repeats": args.repeats, "actor_threads": args.actor_threads, "cpus": os.cpu_count(),
                               "same_metrics": same, **summary}, indent=1))
    print(f"written: {out}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
