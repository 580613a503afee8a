"""Latent Preference Coding on the embedded world (issue 16): each pair loss with and without LPC, same world and seed.

    python bench/lpc.py [--algos dpo,ipo,simpo] [--codes 64] [--iter 3] [--seed 0] [--length-by-kind 6] [--lpc-lr X]

Runs ``python -m selfplay.run algo=A iter=I world.length_by_kind=W`` and the same with ``algo.lpc.codes=C`` for
each algorithm, on the world whose oracle prefers short answers to "Explain {} briefly." prompts and long ones to
the other kinds (``world.length_by_kind``; 0 is the default world, where length is not rewarded).  It prints one
Markdown row per run: the oracle's and the scorer's win rate vs pi_0 at the last iteration (with the half-width of
the 95% interval), the oracle's length-controlled one, the mean response length, the length on the brief prompts
and on the others, and the oracle's win rate within each of the world's prompt kinds.  Then, for each LPC run,
its codebook: over the world's
prompts, how many codes the prior's argmax uses, the prior's mean entropy (nats; log C is uniform), and the
normalised mutual information between the argmax code and the prompt kind (0: the code says nothing of the
kind, 1: it names it).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path


def run(run_dir: Path, algo: str, iterations: int, seed: int, codes: int, length_by_kind: float,
        lpc_lr: float | None) -> list[dict]:
    from selfplay.core.checkpoint import read_metrics

    args = [sys.executable, "-m", "selfplay.run", f"algo={algo}", f"iter={iterations}", f"run.dir={run_dir}",
            f"run.seed={seed}", f"world.length_by_kind={length_by_kind}", "run.progress=false", "log.report=false"]
    if codes:
        args += [f"algo.lpc.codes={codes}"] + ([f"algo.lpc.lr={lpc_lr}"] if lpc_lr else [])
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return read_metrics(run_dir)


def half(r: dict, key: str) -> str:
    lo, hi = r[f"{key}_ci"]
    return f"{r[key]:.3f} ± {(hi - lo) / 2:.3f}"


def mutual_information(pairs: list[tuple[int, str]]) -> float:
    """Normalised mutual information I(code; kind) / min(H(code), H(kind)) of the observed pairs."""
    n = len(pairs)
    joint, codes, kinds = Counter(pairs), Counter(c for c, _ in pairs), Counter(k for _, k in pairs)
    entropy = lambda counts: -sum(v / n * math.log(v / n) for v in counts.values())  # noqa: E731
    info = sum(v / n * math.log(v * n / (codes[c] * kinds[k])) for (c, k), v in joint.items())
    floor = min(entropy(codes), entropy(kinds))
    return info / floor if floor > 0 else 0.0


def codebook(checkpoint: Path, prompts: list[str]) -> tuple[int, float, float, int]:
    """(codes the prior's argmax uses, the prior's mean entropy, NMI(argmax code; prompt kind), C)."""
    import torch

    from selfplay.core.lm import encode_prompt, load_causal_lm, load_tokenizer
    from selfplay.policy import lpc
    from selfplay.world.oracle import prompt_kind

    model, tok, codes = load_causal_lm(str(checkpoint)).eval(), load_tokenizer(str(checkpoint)), lpc.load(checkpoint)
    ids = [encode_prompt(tok, [{"role": "user", "content": p}]) for p in prompts]
    with torch.no_grad():
        prior = torch.cat([torch.softmax(codes.prior_logits(lpc.prompt_states(model, ids[i:i + 64], tok.pad_token_id)),
                                         dim=-1) for i in range(0, len(ids), 64)])
    top = prior.argmax(dim=-1).tolist()
    entropy = -(prior * prior.clamp_min(1e-12).log()).sum(-1).mean().item()
    return len(set(top)), entropy, mutual_information(list(zip(top, map(prompt_kind, prompts)))), codes.codes


def main() -> None:
    from selfplay.config.loading import load_config
    from selfplay.data.prompts import load_prompts
    from selfplay.core.lm import prompt_text
    from selfplay.world.build import get_world
    from selfplay.world.oracle import BRIEF_KINDS, KINDS

    ap = argparse.ArgumentParser()
    ap.add_argument("--algos", default="dpo,ipo,simpo")
    ap.add_argument("--codes", type=int, default=64)
    ap.add_argument("--iter", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--length-by-kind", type=float, default=6.0)
    ap.add_argument("--lpc-lr", type=float, default=None, help="algo.lpc.lr (default: the config's)")
    args = ap.parse_args()
    world = get_world(load_config([f"world.length_by_kind={args.length_by_kind}"]).world)
    root = Path(tempfile.mkdtemp(prefix="bench-lpc-"))
    print(f"{args.iter} iterations, seed {args.seed}, LPC with {args.codes} codes (algo.lpc.lr={args.lpc_lr or 'default'}), "
          f"world.length_by_kind={args.length_by_kind}; runs under {root}\n")
    print("| algo | LPC | oracle vs pi_0 | oracle lc | scorer vs pi_0 | length | length brief / others | "
          + " | ".join(f"oracle, {k}" for k in KINDS) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(KINDS))
    lpc_runs = []
    for algo in args.algos.split(","):
        for codes in (0, args.codes):
            run_dir = root / f"{algo}{'_lpc' if codes else ''}"
            last = run(run_dir, algo, args.iter, args.seed, codes, args.length_by_kind, args.lpc_lr)[-1]
            kinds, lengths = last["oracle_win_rate_vs_initial_by_kind"], last["mean_response_length_by_kind"]
            brief = [v for k, v in lengths.items() if k in BRIEF_KINDS]
            others = [v for k, v in lengths.items() if k not in BRIEF_KINDS]
            print(f"| {algo} | {codes or '-'} | {half(last, 'oracle_win_rate_vs_initial')} | "
                  f"{last['lc_oracle_win_rate_vs_initial']:.3f} | {half(last, 'win_rate_vs_initial')} | "
                  f"{last['mean_response_length']:.1f} | {sum(brief) / len(brief):.1f} / {sum(others) / len(others):.1f} | "
                  + " | ".join(f"{kinds[k]:.3f}" if k in kinds else "-" for k in KINDS) + " |", flush=True)
            if codes:
                lpc_runs.append((algo, run_dir / f"iter_{args.iter}"))
    prompts = [prompt_text(p) if isinstance(p, list) else p for p in load_prompts(world.prompts)]
    print("\n| LPC run | codes used (argmax) | prior entropy (nats) | NMI(code; kind) |\n|---|---|---|---|")
    for algo, checkpoint in lpc_runs:
        used, entropy, nmi, total = codebook(checkpoint, prompts)
        print(f"| {algo} | {used} of {total} | {entropy:.2f} (uniform {math.log(total):.2f}) | {nmi:.2f} |", flush=True)


if __name__ == "__main__":
    main()
