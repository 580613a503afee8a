"""Evaluation each iteration: win rates against pi_0 and pi_{t-1}, the oracle's beside the scorer's,
Pareto fronts with directions; the held-out samples on disk; the summary line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from selfplay.core.batch import Batch
from selfplay.core.checkpoint import EVAL_DIR
from selfplay.core.lm import prompt_text
from selfplay.loop.plan import Oracle, Prompts
from selfplay.loop.stages import Workers


def block_win_rate(prob: torch.Tensor, a: slice, b: slice) -> float:
    """Mean P(y_i > y_j) over i in block a, j in block b of one prompt's probability matrix."""
    return prob[a, b].mean().item()


def win_rates(probs: list[torch.Tensor], n: int) -> dict[str, float]:
    """Each prob matrix orders responses [current (n), initial (n), previous (n)].

    Returns the scorer's ``vs_initial`` and ``vs_previous``: the mean over prompts of the
    mean over the n x n sample pairs.
    """
    cur, init, prev = slice(0, n), slice(n, 2 * n), slice(2 * n, 3 * n)
    return {
        "vs_initial": sum(block_win_rate(p, cur, init) for p in probs) / len(probs),
        "vs_previous": sum(block_win_rate(p, cur, prev) for p in probs) / len(probs),
    }


def evaluate(workers: Workers, judge, prompts: Prompts, current: dict, initial: dict, previous: dict,
             cfg: DictConfig, oracle: Optional[Oracle]) -> dict:
    """pi_t's held-out responses judged together with pi_0's and pi_{t-1}'s (docs/methods.md §7): the judge's
    win rates, the mean response length, the judge's fronts if any; with an oracle, the same by the oracle."""
    n, vs = cfg.eval.samples, prompts.eval_directions
    joint = [c + i + p for c, i, p in zip(current["responses"], initial["responses"], previous["responses"])]
    verdict = judge.judge(workers, prompts.eval, joint, vs, cfg)
    out = {f"win_rate_{k}": v for k, v in win_rates(verdict.probabilities(), n).items()}
    lengths = [x for g in current["lengths"] for x in g]
    out["mean_response_length"] = sum(lengths) / len(lengths)
    out.update(judge.fronts(verdict.rewards, vs, n, current["lengths"]))
    if oracle is None:
        return out
    oracle_probs, labels = judge.oracle(oracle, [prompt_text(p) for p in prompts.eval], joint, vs)
    out.update(judge.fronts(labels, vs, n, None, prefix="oracle_"))
    out.update({f"oracle_win_rate_{k}": v for k, v in win_rates(oracle_probs, n).items()})
    return out


def eval_path(run_dir: Path, t: int) -> Path:
    return run_dir / EVAL_DIR / f"iter_{t}.json"


def load_eval(run_dir: Path, t: int) -> dict:
    return json.loads(eval_path(run_dir, t).read_text())


def iteration_record(t: int, result: dict, train_stats: dict, rollout: Batch, engine_starts: int, sync_buckets: int,
                     times: dict[str, float]) -> dict:
    """Iteration t's metrics line: the evaluation, training, rollout throughput and each stage's seconds."""
    return {
        "iteration": t,
        **result,
        "train_loss": train_stats["loss"],
        "train": train_stats,
        "rollout_tokens": rollout.num_tokens(),
        "generate_tokens_per_s": rollout.num_tokens() / max(times["generate_s"], 1e-9),
        "rollout_mean_length": rollout.num_tokens() / len(rollout.response_ids),
        "engine_starts": engine_starts,
        "sync_buckets": sync_buckets,
        **times,
    }


def summary_line(r: dict) -> str:
    oracle = (f" | oracle vs init {r['oracle_win_rate_vs_initial']:.3f} vs prev {r['oracle_win_rate_vs_previous']:.3f}"
              if "oracle_win_rate_vs_initial" in r else "")
    stages = " ".join(f"{k[:-2]} {v:.1f}s" for k, v in r.items() if k.endswith("_s") and k != "generate_tokens_per_s")
    loss = "skipped" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
    front = f" | hypervolume {r['hypervolume']:.0f} (initial {r['initial_hypervolume']:.0f})" if "hypervolume" in r else ""
    return (f"iter {r['iteration']}: win rate vs init {r['win_rate_vs_initial']:.3f} vs prev {r['win_rate_vs_previous']:.3f}"
            f"{oracle}{front} | length {r['mean_response_length']:.1f} | loss {loss} | {stages}")
