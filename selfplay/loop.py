"""The self-play loop (METHODS 1): one function that reads like the algorithm box.

    for t = 1..T:
        generate K responses per prompt from pi_{t-1}
        score them (K x K preference log-odds per prompt)
        build the algorithm's batch and train pi_t from pi_{t-1}
        send pi_t's weights to the generators, in place
        evaluate pi_t against pi_0 and pi_{t-1} on held-out prompts
        checkpoint, then append the metrics line (the commit point of iteration t)

The driver owns the control flow; actors only hold resources (see ``actors``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import ray
import torch
from omegaconf import DictConfig

from actors.group import gather
from selfplay.algorithms import get_algorithm
from selfplay.batch import Rollout
from selfplay.data import iteration_prompts
from selfplay.checkpoint import EVAL_DIR, append_metrics, atomic_write_json, iteration_dir
from selfplay.evaluation import win_rates
from selfplay.modeling import Messages, prompt_text

log = logging.getLogger(__name__)

# An oracle judge: (prompt text, responses) -> P[i][j] = P(y_i > y_j | x).
Oracle = Callable[[str, list[str]], list[list[float]]]


@dataclass
class Workers:
    generators: list  # Generator actor handles
    scorer: object  # Scorer actor handle
    learner: object  # Learner actor handle

    def actors(self) -> list:
        return [*self.generators, self.scorer, self.learner]


@dataclass
class Prompts:
    train: list[Messages]
    train_ids: list[list[int]]
    eval: list[Messages]
    eval_ids: list[list[int]]


@contextmanager
def stage(name: str, times: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[f"{name}_s"] = round(time.perf_counter() - start, 3)


def iteration_seed(cfg: DictConfig, t: int, salt: int) -> int:
    return (cfg.run.seed * 1_000_003 + t * 10_007 + salt * 101) % (2**31 - 1)


def generate(workers: Workers, prompt_ids: list[list[int]], n: int, temperature: float, cfg: DictConfig,
             seed: int, desc: str) -> list[list]:
    """Shard prompts over the generator replicas (a few chunks each, for the progress bar)."""
    g = cfg.generator
    chunks = max(1, len(workers.generators) * 4)
    size = -(-len(prompt_ids) // chunks)
    refs = []
    for c, start in enumerate(range(0, len(prompt_ids), size)):
        actor = workers.generators[c % len(workers.generators)]
        # Seed offsets follow the global prompt index, so sharding does not change the samples.
        refs.append(actor.generate.remote(prompt_ids[start:start + size], n, temperature, g.top_p,
                                          g.max_new_tokens, seed + start * n))
    return [group for part in gather(refs, desc, cfg.run.progress) for group in part]


def score(workers: Workers, prompts: list[Messages], responses: list[list[str]], cfg: DictConfig) -> list[torch.Tensor]:
    size = max(1, cfg.scorer.batch_size // max(len(responses[0]), 1))
    refs = [workers.scorer.score.remote(prompts[i:i + size], responses[i:i + size]) for i in range(0, len(prompts), size)]
    scores = [s for part in gather(refs, "score", cfg.run.progress) for s in part]
    for i, s in enumerate(scores):
        if not torch.isfinite(s).all():
            raise FloatingPointError(f"the scorer returned non-finite scores for prompt {i}: {prompt_text(prompts[i])!r}")
    return scores


def train(workers: Workers, rollout: Rollout, cfg: DictConfig, t: int) -> dict:
    """Build the algorithm's examples and train on them; with none (every pair filtered out), say so and skip."""
    rng = random.Random(iteration_seed(cfg, t, 2))  # pair strategies that draw (best_random)
    batch = get_algorithm(cfg.algo.name).build(rollout, cfg.algo, rng)
    if len(batch) == 0:
        reason = (f"no training examples: the margin filter (algo.min_prob={cfg.algo.min_prob}) and the "
                  "rule against pairs of identical or tied responses filtered out every pair")
        log.warning("iteration %d: %s; skipping training (the policy is unchanged)", t, reason)
        return {"loss": None, "skipped": reason}
    stats = ray.get(workers.learner.begin_iteration.remote(batch))
    refs = [workers.learner.train_epoch.remote(e, t) for e in range(cfg.train.epochs)]
    epochs = gather(refs, "train", cfg.run.progress)  # an actor runs its calls in order
    return {**stats, **epochs[-1]}


def sync_weights(workers: Workers) -> None:
    """Learner -> object store (once) -> every generator, loaded in place."""
    weights = workers.learner.weights.remote()
    ray.get([g.load_weights.remote(weights) for g in workers.generators])


def sample_eval(workers: Workers, prompts: Prompts, cfg: DictConfig) -> dict:
    """Responses of the current policy on the held-out prompts (the same seeds every iteration)."""
    n_prompts = min(cfg.eval.prompts, len(prompts.eval))
    groups = generate(workers, prompts.eval_ids[:n_prompts], cfg.eval.samples, cfg.eval.temperature, cfg,
                      seed=iteration_seed(cfg, 0, 7), desc="eval-gen")
    return {"responses": [[s.text for s in g] for g in groups],
            "lengths": [[len(s.response_ids) for s in g] for g in groups]}


def evaluate(workers: Workers, prompts: Prompts, current: dict, initial: dict, previous: dict, cfg: DictConfig,
             oracle: Optional[Oracle]) -> dict[str, float]:
    n = cfg.eval.samples
    eval_prompts = prompts.eval[:len(current["responses"])]
    joint = [c + i + p for c, i, p in zip(current["responses"], initial["responses"], previous["responses"])]
    probs = [torch.sigmoid(s) for s in score(workers, eval_prompts, joint, cfg)]
    out = {f"win_rate_{k}": v for k, v in win_rates(probs, n).items()}
    if oracle is not None:
        oracle_probs = [torch.tensor(oracle(prompt_text(p), r)) for p, r in zip(eval_prompts, joint)]
        out.update({f"oracle_win_rate_{k}": v for k, v in win_rates(oracle_probs, n).items()})
    lengths = [x for g in current["lengths"] for x in g]
    out["mean_response_length"] = sum(lengths) / len(lengths)
    return out


def eval_path(run_dir: Path, t: int) -> Path:
    return run_dir / EVAL_DIR / f"iter_{t}.json"


def load_eval(run_dir: Path, t: int) -> dict:
    return json.loads(eval_path(run_dir, t).read_text())


def selfplay(cfg: DictConfig, workers: Workers, prompts: Prompts, run_dir: Path, start: int,
             oracle: Optional[Oracle] = None) -> list[dict]:
    """Iterations start+1 .. cfg.iter.  Returns their metrics records."""
    if start == 0:
        atomic_write_json(eval_path(run_dir, 0), sample_eval(workers, prompts, cfg))
    initial, previous = load_eval(run_dir, 0), load_eval(run_dir, start)
    records = []
    for t in range(start + 1, cfg.iter + 1):
        times: dict[str, float] = {}
        chosen = iteration_prompts(list(zip(prompts.train, prompts.train_ids)), t, cfg.data.prompts_per_iter)
        with stage("generate", times):
            rollout = Rollout([m for m, _ in chosen], [ids for _, ids in chosen], [])
            rollout.samples = generate(workers, rollout.prompt_ids, cfg.generator.k, cfg.generator.temperature, cfg,
                                       seed=iteration_seed(cfg, t, 1), desc="generate")
        with stage("score", times):
            rollout.scores = score(workers, rollout.prompts, rollout.texts(), cfg)
        with stage("train", times):
            train_stats = train(workers, rollout, cfg, t)
        with stage("sync", times):
            sync_weights(workers)
        with stage("eval", times):
            current = sample_eval(workers, prompts, cfg)
            result = evaluate(workers, prompts, current, initial, previous, cfg, oracle)
        with stage("checkpoint", times):
            ray.get(workers.learner.save.remote(str(iteration_dir(run_dir, t))))
            atomic_write_json(eval_path(run_dir, t), current)
        record = {
            "iteration": t,
            **result,
            "train_loss": train_stats["loss"],
            "train": train_stats,
            "rollout_tokens": rollout.num_tokens(),
            "generate_tokens_per_s": rollout.num_tokens() / max(times["generate_s"], 1e-9),
            "rollout_mean_length": rollout.num_tokens() / sum(len(g) for g in rollout.samples),
            "engine_starts": sum(ray.get([g.engine_starts.remote() for g in workers.generators])),
            **times,
        }
        append_metrics(run_dir, record)  # commit point: iteration t is complete
        log.info(summary_line(record))
        print(summary_line(record), flush=True)
        records.append(record)
        previous = current
    return records


def summary_line(r: dict) -> str:
    oracle = (f" | oracle vs init {r['oracle_win_rate_vs_initial']:.3f} vs prev {r['oracle_win_rate_vs_previous']:.3f}"
              if "oracle_win_rate_vs_initial" in r else "")
    stages = " ".join(f"{k[:-2]} {v:.1f}s" for k, v in r.items() if k.endswith("_s") and k != "generate_tokens_per_s")
    loss = "skipped" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
    return (f"iter {r['iteration']}: win rate vs init {r['win_rate_vs_initial']:.3f} vs prev {r['win_rate_vs_previous']:.3f}"
            f"{oracle} | length {r['mean_response_length']:.1f} | loss {loss} | {stages}")
