"""Every self-play algorithm on the same world, scorer and seed: a comparison table.

    python bench/algorithms.py [--iter 3] [--seed 0] [--variants gpo,sppo,dpo,...] [--out runs/bench_algorithms]

Each variant is a preset (``configs/<algo>.yaml``) plus overrides, run for
``--iter`` iterations of ``python -m selfplay.run`` on the embedded world, one
after another on one Ray cluster.  Prints one markdown row per variant: the
last iteration's win rate against the initial policy by the scorer and by the
oracle, its mean response length, and the mean wall time per iteration.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# name -> command-line arguments of selfplay.run
VARIANTS: dict[str, list[str]] = {
    "gpo": ["gpo"],
    "gpo-pair": ["gpo", "algo.pairs=best_worst"],  # docs/methods.md §A.2's (best, worst) pair
    "sppo": ["sppo"],
    "sppo-pair": ["sppo", "algo.pairs=best_worst"],
    "sppo-hard": ["sppo", "algo.pairs=best_worst", "algo.hard=true"],
    "dpo": ["dpo"],
    "dpo-prev": ["dpo", "algo.reference=previous"],
    "ipo": ["ipo"],  # TRL's form: log-ratios averaged over tokens
    "ipo-sum": ["ipo", "algo.length_normalize=false", "algo.tau=0.01"],  # summed log-ratios, METHODS' tau
    "simpo": ["simpo"],
}
STAGES = ("generate_s", "score_s", "train_s", "sync_s", "eval_s", "checkpoint_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iter", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    ap.add_argument("--out", default="runs/bench_algorithms", help="run directories go here (replaced)")
    ap.add_argument("overrides", nargs="*", help="key=value for every run, e.g. generator.backend=hf")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")

    import ray

    from selfplay.core.checkpoint import read_metrics
    from selfplay.run import main as run

    out = Path(args.out)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for name in names:
            run_dir = out / name
            shutil.rmtree(run_dir, ignore_errors=True)
            argv = [*VARIANTS[name], f"iter={args.iter}", f"run.seed={args.seed}", f"run.dir={run_dir}",
                    "run.progress=false", *args.overrides]
            if run(argv) != 0:
                raise SystemExit(f"{name}: selfplay.run {' '.join(argv)} failed")
            records = read_metrics(run_dir)
            last = records[-1]
            per_iter = sum(sum(r[s] for s in STAGES) for r in records) / len(records)
            rows.append(f"| {name} | {last['win_rate_vs_initial']:.3f} | {last['oracle_win_rate_vs_initial']:.3f} "
                        f"| {last['mean_response_length']:.1f} | {per_iter:.0f} |")
            print(rows[-1], flush=True)
    finally:
        ray.shutdown()
    print(f"\niteration {args.iter} vs the initial policy, seed {args.seed}:\n")
    print("| algorithm | scorer win rate | oracle win rate | mean length | s / iteration |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
