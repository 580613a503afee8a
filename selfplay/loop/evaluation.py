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
from selfplay.core.html_report import rate_text
from selfplay.core.win_rates import pairwise_blocks, win_rate_report
from selfplay.loop.sources import Oracle, Prompts
from selfplay.loop.workers import Workers


def win_rates(probs: list[torch.Tensor], n: int, lengths: list[list[int]], clusters: list[int], seed: int,
              prefix: str = "") -> dict:
    """Each unit's probability matrix orders its responses [current (n), initial (n), previous (n)], and so do
    its ``lengths``.  The win rates of current against initial and against previous (the mean over units of the
    mean over the n x n sample pairs), their length-controlled forms, and a 95% bootstrap interval for each over
    the prompts (``clusters``: each unit's prompt), seeded (``selfplay.core.win_rates``)."""
    cur, init, prev = slice(0, n), slice(n, 2 * n), slice(2 * n, 3 * n)
    size = torch.tensor(lengths, dtype=torch.float64)  # (U, 3n)
    out = {}
    for name, other in (("vs_initial", init), ("vs_previous", prev)):
        diff = size[:, cur, None] - size[:, None, other]
        out.update(win_rate_report(pairwise_blocks(probs, cur, other), diff, torch.tensor(clusters), seed,
                                   f"{prefix}win_rate_{name}"))
    return out


def by_kind(values: list[float], kinds: list[str]) -> dict[str, float]:
    """The mean of the units' ``values`` within each kind of prompt."""
    return {k: sum(v for v, x in zip(values, kinds) if x == k) / kinds.count(k) for k in sorted(set(kinds))}


def evaluate(workers: Workers, judge, prompts: Prompts, current: dict, initial: dict, previous: dict,
             cfg: DictConfig, oracle: Optional[Oracle]) -> dict:
    """pi_t's held-out responses judged together with pi_0's and pi_{t-1}'s (docs/methods.md §7): the judge's
    win rates, the mean response length, the judge's fronts if any; with an oracle, the same by the oracle."""
    n, vs = cfg.eval.samples, prompts.eval_directions
    joint = [c + i + p for c, i, p in zip(current["responses"], initial["responses"], previous["responses"])]
    joint_lengths = [c + i + p for c, i, p in zip(current["lengths"], initial["lengths"], previous["lengths"])]
    clusters = judge.prompt_of_units(len(joint))
    texts = [prompt_text(p) for p in prompts.eval]
    verdict = judge.judge(workers, prompts.eval, joint, vs, cfg)
    probs = verdict.probabilities()
    out = {"eval_prompts": max(clusters) + 1, **win_rates(probs, n, joint_lengths, clusters, cfg.run.seed)}
    # the first held-out units' first responses of pi_0 and pi_t, with P(pi_t's > pi_0's)
    samples = [{"prompt": texts[u], "initial": joint[u][n], "current": joint[u][0],
                "p_scorer": probs[u][0, n].item()} for u in range(min(cfg.log.samples, len(joint)))]
    out["samples"] = samples
    lengths = [x for g in current["lengths"] for x in g]
    out["mean_response_length"] = sum(lengths) / len(lengths)
    out.update(judge.fronts(verdict.rewards, vs, n, current["lengths"]))
    if oracle is None:
        return out
    oracle_probs, labels = judge.oracle(oracle, texts, joint, vs)
    out.update(judge.fronts(labels, vs, n, None, prefix="oracle_"))
    out.update(win_rates(oracle_probs, n, joint_lengths, clusters, cfg.run.seed, prefix="oracle_"))
    if oracle.kind is not None:  # the win rate of pi_t against pi_0 and pi_t's length within each kind of prompt
        kinds = list(map(oracle.kind, texts))
        rates = pairwise_blocks(oracle_probs, slice(0, n), slice(n, 2 * n)).mean(dim=(1, 2)).tolist()
        out["oracle_win_rate_vs_initial_by_kind"] = by_kind(rates, kinds)
        out["mean_response_length_by_kind"] = by_kind([sum(g) / len(g) for g in current["lengths"]], kinds)
    for u, sample in enumerate(samples):
        sample["p_oracle"] = float(oracle_probs[u][0, n])
    return out


def eval_path(run_dir: Path, t: int) -> Path:
    return run_dir / EVAL_DIR / f"iter_{t}.json"


def load_eval(run_dir: Path, t: int) -> dict:
    return json.loads(eval_path(run_dir, t).read_text())


def iteration_record(t: int, result: dict, train_stats: dict, rollout: Batch, engine_starts: int, sync_buckets: int,
                     times: dict[str, float], reused: bool = False, failures: list[dict] | None = None) -> dict:
    """Iteration t's metrics line: the evaluation, training, rollout throughput and each stage's seconds;
    ``reused``: the rollout was the one a stopped run had saved (generate and score took no time);
    ``failures``: the actors that failed in it and were started again (``loop.workers.Failures``)."""
    return {
        "iteration": t,
        **result,
        "train_loss": train_stats["loss"],
        "train": train_stats,
        "rollout_tokens": rollout.num_tokens(),
        "generate_tokens_per_s": rollout.num_tokens() / times["generate_s"] if times["generate_s"] > 0 else 0.0,
        "rollout_reused": reused,
        "rollout_mean_length": rollout.num_tokens() / len(rollout.response_ids),
        "engine_starts": engine_starts,
        "sync_buckets": sync_buckets,
        "actor_failures": failures or [],
        **times,
    }


def rate(r: dict, key: str) -> str:
    """``0.777 ± 0.030 (lc 0.702)``: the win rate, the half-width of its 95% interval, the length-controlled one."""
    return f"{rate_text(r, key)} (lc {r['lc_' + key]:.3f})"


def summary_line(r: dict) -> str:
    oracle = (f" | oracle vs init {rate(r, 'oracle_win_rate_vs_initial')} "
              f"vs prev {rate(r, 'oracle_win_rate_vs_previous')}" if "oracle_win_rate_vs_initial" in r else "")
    stages = " ".join(f"{k[:-2]} {v:.1f}s" for k, v in r.items() if k.endswith("_s") and k != "generate_tokens_per_s")
    loss = "skipped" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
    front = f" | hypervolume {r['hypervolume']:.0f} (initial {r['initial_hypervolume']:.0f})" if "hypervolume" in r else ""
    return (f"iter {r['iteration']}: win rate vs init {rate(r, 'win_rate_vs_initial')} "
            f"vs prev {rate(r, 'win_rate_vs_previous')}{oracle}{front} | length {r['mean_response_length']:.1f} "
            f"| loss {loss} | {stages}")
