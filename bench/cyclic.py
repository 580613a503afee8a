"""The cyclic-preference benchmark ([GPM] table 1): held-out accuracy of BT and the GPM on cyclic data.

    python bench/cyclic.py [--datasets all] [--all-sizes | --sizes small,medium] [--seeds 0,1,2,3,4]
                           [--ks 2,3,4] [--jobs 2]
                           [--schedule constant|linear|cosine] [--warmup 0.0]

For every dataset of ``selfplay.world.cyclic`` (four 3-cycles of [GPM]'s attributes and the world
oracle's tone cycle), every size (``small`` by default; ``--all-sizes`` adds ``medium`` and ``large``) and
every seed (of the dataset and of the heads' initialisation), trains a BT reward model and the GPM with
each k, without and with the scale gate, all from the embedded world's SFT policy with the same budget
(``cyclic.STEPS`` steps of ``cyclic.BATCH_SIZE`` pairs at lr ``cyclic.LR``, ``cyclic.SCHEDULE`` after a
warm-up over ``cyclic.WARMUP_RATIO`` of them; the GPM at
``cyclic.TAU``).
Prints one markdown row per instance as it finishes: the best accuracy any transitive ranking reaches on
the held-out pairs, then BT's mean and maximum and each GPM's minimum and mean held-out accuracy over the
seeds (the bars: BT at most 0.70, every GPM at least 0.95).  ``--jobs``
fits run side by side, one thread each.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor


def fit_one(job: tuple) -> float:
    """Held-out accuracy of one (dataset, size, seed, model) fit, in a worker process with one thread."""
    import torch

    from selfplay.config.loading import load_config
    from selfplay.core.lm import load_tokenizer
    from selfplay.world import cyclic
    from selfplay.world.build import get_world

    name, size, seed, kind, k, gate, steps, tau, warmup, schedule = job
    torch.set_num_threads(1)
    world = get_world(load_config([]).world)
    train, test = cyclic.make_split(name, size, seed)
    gpm = {"k": k, "gate": gate, "tau": tau} if kind == "gpm" else {}
    return cyclic.fit(kind, train, test, world.policy, load_tokenizer(world.tokenizer), steps=steps, seed=seed,
                      warmup_ratio=warmup, schedule=schedule, train_accuracy=False, **gpm)["accuracy"]


def main() -> None:
    from selfplay.config.loading import load_config
    from selfplay.config.schema import LR_SCHEDULES
    from selfplay.world import cyclic
    from selfplay.world.build import get_world

    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="all", help=f"comma-separated, from {cyclic.DATASETS}")
    ap.add_argument("--all-sizes", action="store_true", help="medium and large as well as small")
    ap.add_argument("--sizes", default="small", help=f"comma-separated, from {tuple(cyclic.SIZES)}")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--ks", default="2,3,4", help="GPM head sizes (each without and with the gate)")
    ap.add_argument("--tau", type=float, default=cyclic.TAU, help="the GPM's temperature")
    ap.add_argument("--steps", type=int, default=cyclic.STEPS)
    ap.add_argument("--warmup", type=float, default=cyclic.WARMUP_RATIO, help="share of the steps the lr rises over")
    ap.add_argument("--schedule", default=cyclic.SCHEDULE, choices=LR_SCHEDULES,
                    help="the lr after the warm-up")
    ap.add_argument("--jobs", type=int, default=2, help="fits run in parallel, one thread each")
    args = ap.parse_args()

    names = cyclic.DATASETS if args.datasets == "all" else tuple(args.datasets.split(","))
    sizes = tuple(cyclic.SIZES) if args.all_sizes else tuple(args.sizes.split(","))
    for size in sizes:
        for name in names:
            cyclic.make_split(name, size, 0)  # an unknown size or dataset is refused before any fit
    seeds = [int(s) for s in args.seeds.split(",")]
    models = [("bt", 0, False)] + [("gpm", k, gate) for k in map(int, args.ks.split(",")) for gate in (False, True)]
    get_world(load_config([]).world)  # built (once) before the workers start

    print(f"budget: {args.steps} steps x {cyclic.BATCH_SIZE} pairs, lr {cyclic.LR} after a linear warm-up over "
          f"{args.warmup:.0%} of the steps, then {args.schedule}; "
          f"GPM tau {args.tau}; "
          f"{cyclic.TEST_PAIRS} held-out pairs per instance; seeds {seeds}; BT mean / max, GPM min / mean over the seeds\n")
    cols = ["BT mean / max"] + [f"GPM k={k}{' +gate' if gate else ''}" for _, k, gate in models[1:]]
    print("| dataset | size (train pairs) | best transitive | " + " | ".join(cols) + " | seconds |")
    print("|---" * (4 + len(cols)) + "|")
    with ProcessPoolExecutor(args.jobs) as pool:
        for size in sizes:
            for name in names:
                start = time.perf_counter()
                jobs = [(name, size, seed, kind, k, gate, args.steps, args.tau, args.warmup, args.schedule)
                        for kind, k, gate in models for seed in seeds]
                accs = list(pool.map(fit_one, jobs))
                per_model = [accs[i * len(seeds):(i + 1) * len(seeds)] for i in range(len(models))]
                best = min(cyclic.best_transitive_accuracy(cyclic.make_split(name, size, s)[1]) for s in seeds)
                bt, gpms = per_model[0], per_model[1:]  # BT's bar is an upper one: its mean and max
                cells = ([f"{best:.3f}", f"{sum(bt) / len(bt):.3f} / {max(bt):.3f}"]
                         + [f"{min(a):.3f} / {sum(a) / len(a):.3f}" for a in gpms])
                print(f"| {name} | {size} ({cyclic.SIZES[size]}) | " + " | ".join(cells)
                      + f" | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
