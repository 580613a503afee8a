"""The cyclic-preference benchmark (seed 004 table 1): held-out accuracy of BT and the GPM on cyclic data.

    python bench/cyclic.py [--datasets all] [--sizes small,medium,large] [--ks 1,2,3,4] [--tau 1.0] [--seed 0]

For every dataset of ``selfplay.world.cyclic`` (four 3-cycles of seed 004's
attributes and the world oracle's tone cycle) and every size, trains a BT
reward model and the GPM with k = 1..4, without and with the scale gate, all
from the embedded world's SFT policy with the same budget (``cyclic.STEPS``
steps of ``cyclic.BATCH_SIZE`` pairs at lr ``cyclic.LR``, one seed), and prints
one markdown row per instance as it finishes: the best accuracy any transitive
ranking can reach on the held-out pairs, then each model's held-out accuracy.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from selfplay.world import cyclic

    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="all", help=f"comma-separated, from {cyclic.DATASETS}")
    ap.add_argument("--sizes", default=",".join(cyclic.SIZES), help=f"comma-separated, from {tuple(cyclic.SIZES)}")
    ap.add_argument("--ks", default="1,2,3,4")
    ap.add_argument("--tau", type=float, default=cyclic.TAU, help="the GPM's temperature")
    ap.add_argument("--steps", type=int, default=cyclic.STEPS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from selfplay.config.loading import load_config
    from selfplay.core.lm import load_tokenizer
    from selfplay.world.build import get_world

    names = cyclic.DATASETS if args.datasets == "all" else tuple(args.datasets.split(","))
    sizes = tuple(args.sizes.split(","))
    gpms = [(k, gate) for k in map(int, args.ks.split(",")) for gate in (False, True)]
    world = get_world(load_config([]).world)
    tokenizer = load_tokenizer(world.tokenizer)

    print(f"budget: {args.steps} steps x {cyclic.BATCH_SIZE} pairs, lr {cyclic.LR}, seed {args.seed}; "
          f"GPM tau {args.tau}; {cyclic.TEST_PAIRS} held-out pairs per instance\n")
    gpm_cols = [f"GPM k={k}{' +gate' if gate else ''}" for k, gate in gpms]
    print("| dataset | size (train pairs) | best transitive | BT | " + " | ".join(gpm_cols) + " | seconds |")
    print("|---" * (5 + len(gpm_cols)) + "|")
    for size in sizes:
        for name in names:
            start = time.perf_counter()
            train, test = cyclic.make_split(name, size, args.seed)
            def fit(kind: str, **gpm_settings) -> float:
                return cyclic.fit(kind, train, test, world.policy, tokenizer, steps=args.steps, seed=args.seed,
                                  **gpm_settings)["accuracy"]

            accs = [fit("bt")] + [fit("gpm", k=k, gate=gate, tau=args.tau) for k, gate in gpms]
            cells = [f"{cyclic.best_transitive_accuracy(test):.3f}"] + [f"{a:.3f}" for a in accs]
            print(f"| {name} | {size} ({len(train)}) | " + " | ".join(cells)
                  + f" | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
