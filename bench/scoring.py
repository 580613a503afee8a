"""Scoring cost: a full K x K preference matrix from the GPM vs the pairwise baseline, same backbone.

    python bench/scoring.py [--prompts 16] [--ks 2,4,8,16] [--backbone DIR] [--device cpu|cuda]

The GPM embeds each response once (K forward passes) and gets all K^2 scores from
one small matrix product; the pairwise model reads every ordered pair (K(K-1)
passes of about twice the length).  Both models sit on the same backbone
(default: the embedded world's SFT policy; ``--backbone`` takes any causal-LM
directory or hub name) with untrained heads, since cost does not depend on the
weights.  Prints seconds per prompt for each K and the ratio pairwise / GPM.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def timed(fn, repeats: int, sync) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--ks", default="2,4,8,16")
    ap.add_argument("--backbone", default=None, help="causal-LM dir or hub name (default: the embedded world's policy)")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256, help="sequences per forward pass, for both models")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from selfplay.config.loading import load_config
    from selfplay.core.lm import load_tokenizer
    from selfplay.models.backbone import load_backbone
    from selfplay.models.kinds import new_preference_model
    from selfplay.world import corpus
    from selfplay.world.build import get_world

    backbone, tokenizer = args.backbone, args.tokenizer
    if backbone is None:
        world = get_world(load_config([]).world)
        backbone, tokenizer = world.policy, world.tokenizer
    tok = load_tokenizer(tokenizer or backbone)
    rng = random.Random(0)
    texts = corpus.make_prompts(args.prompts, rng)
    prompts = [[{"role": "user", "content": p}] for p in texts]
    models = {kind: new_preference_model(kind, load_backbone(backbone)).to(args.device).eval()
              for kind in ("gpm", "pairwise")}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    print(f"backbone {backbone} on {args.device}; {args.prompts} prompts; batch {args.batch_size}; "
          f"median of {args.repeats}")
    print(f"{'K':>4} {'GPM passes':>11} {'pairwise passes':>16} {'GPM s/prompt':>13} {'pairwise s/prompt':>18} {'ratio':>7}")
    for k in (int(x) for x in args.ks.split(",")):
        responses = [[corpus.sample_response(p, rng) for _ in range(k)] for p in texts]
        secs = {kind: timed(lambda m=m: m.score_matrices(tok, prompts, responses, args.batch_size), args.repeats, sync)
                / args.prompts for kind, m in models.items()}
        print(f"{k:>4} {k:>11} {k * (k - 1):>16} {secs['gpm']:>13.5f} {secs['pairwise']:>18.5f} "
              f"{secs['pairwise'] / secs['gpm']:>7.1f}")


if __name__ == "__main__":
    main()
