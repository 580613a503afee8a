"""The self-play loop (METHODS 1): one function that reads like the algorithm box.

    for t = 1..T:
        take this iteration's prompts (with a multi-objective scorer: each with sampled directions v
            in its system prompt)
        generate K responses per prompt from pi_{t-1}
        score them (K x K preference log-odds per prompt; multi-objective: S = v^T (r_i - r_j) / tau)
        build the algorithm's batch (+ memory replay) and train pi_t from pi_{t-1} (or pi_0)
        send pi_t's weights to the generators, in place
        evaluate pi_t against pi_0 and pi_{t-1} on held-out prompts (multi-objective: over a grid of
            directions, with each policy's Pareto front)
        checkpoint, then append the metrics line (the commit point of iteration t)

The driver owns the control flow; actors only hold resources (see ``actors``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import ray
import torch
from omegaconf import DictConfig

from actors.group import gather
from selfplay.algorithms import draw_replay, get_algorithm
from selfplay.batch import Rollout
from selfplay.checkpoint import EVAL_DIR, append_metrics, atomic_write_json, iteration_dir, read_metrics
from selfplay.data import iteration_prompts
from selfplay.directions import Direction, strip
from selfplay.evaluation import win_rates
from selfplay.modeling import Messages, prompt_text
from selfplay.pareto import plot_fronts
from selfplay.steering import Steering, front_metrics, save_attributes

log = logging.getLogger(__name__)


@dataclass
class Oracle:
    """Ground truth beside the scorer (the embedded world's): (prompt text, responses) -> P[i][j] =
    P(y_i > y_j | x), and for runs with directions the attribute labels (0-100) of a response."""

    preferences: Callable[[str, list[str]], list[list[float]]]
    attributes: Optional[Callable[[str, str], tuple[float, ...]]] = None
    names: tuple[str, ...] = ()


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
    eval: list[Messages]  # the held-out prompts evaluated each iteration (with directions: x grid direction)
    eval_ids: list[list[int]]
    encode: Callable[[Messages], list[int]]  # the policy's chat template + tokenizer
    eval_directions: Optional[list[Direction]] = None
    replay: list[tuple[list[int], list[int]]] = field(default_factory=list)  # memory replay (prompt, response) ids


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


def score(workers: Workers, prompts: list[Messages], responses: list[list[str]], cfg: DictConfig,
          method: str = "score") -> list[torch.Tensor]:
    """The scorer's (K, K) log-odds matrices (``score``) or, from a multi-objective model, (K, m) rewards
    (``rewards``), one per prompt; non-finite values are refused."""
    size = max(1, cfg.scorer.batch_size // max(len(responses[0]), 1))
    call = getattr(workers.scorer, method)
    refs = [call.remote(prompts[i:i + size], responses[i:i + size]) for i in range(0, len(prompts), size)]
    scores = [s for part in gather(refs, method, cfg.run.progress) for s in part]
    for i, s in enumerate(scores):
        if not torch.isfinite(s).all():
            raise FloatingPointError(f"the scorer returned non-finite {method} for prompt {i}: {prompt_text(prompts[i])!r}")
    return scores


def judge(workers: Workers, prompts: list[Messages], responses: list[list[str]], directions: Optional[list[Direction]],
          cfg: DictConfig, steering: Optional[Steering]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Log-odds matrices, and with directions the rewards r(x, y) they scalarise (the reward model reads x
    without the direction's system prompt)."""
    if steering is None:
        return score(workers, prompts, responses, cfg), []
    rewards = score(workers, [strip(p) for p in prompts], responses, cfg, method="rewards")
    return [steering.scores(r, v) for r, v in zip(rewards, directions)], rewards


def take_prompts(prompts: Prompts, cfg: DictConfig, t: int, steering: Optional[Steering]) -> Rollout:
    """Iteration t's prompts (data.subsets alternate); with steering, each with sampled directions."""
    chosen = iteration_prompts(list(zip(prompts.train, prompts.train_ids)), t, cfg.data.prompts_per_iter,
                               cfg.data.subsets)
    rollout = Rollout([m for m, _ in chosen], [ids for _, ids in chosen], [])
    if steering is not None:
        rollout.prompts, rollout.directions = steering.training_units(rollout.prompts,
                                                                      random.Random(iteration_seed(cfg, t, 3)))
        rollout.prompt_ids = [prompts.encode(m) for m in rollout.prompts]
    if cfg.algo.get("replay"):
        rollout.replay = draw_replay(prompts.replay, len(rollout.prompts), cfg.algo.replay,
                                     random.Random(iteration_seed(cfg, t, 4)))
    return rollout


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
    groups = generate(workers, prompts.eval_ids, cfg.eval.samples, cfg.eval.temperature, cfg,
                      seed=iteration_seed(cfg, 0, 7), desc="eval-gen")
    return {"responses": [[s.text for s in g] for g in groups],
            "lengths": [[len(s.response_ids) for s in g] for g in groups]}


def evaluate(workers: Workers, prompts: Prompts, current: dict, initial: dict, previous: dict, cfg: DictConfig,
             oracle: Optional[Oracle], steering: Optional[Steering] = None) -> dict:
    n, vs = cfg.eval.samples, prompts.eval_directions
    joint = [c + i + p for c, i, p in zip(current["responses"], initial["responses"], previous["responses"])]
    scores, rewards = judge(workers, prompts.eval, joint, vs, cfg, steering)
    out = {f"win_rate_{k}": v for k, v in win_rates([torch.sigmoid(s) for s in scores], n).items()}
    texts = [prompt_text(p) for p in prompts.eval]
    lengths = [x for g in current["lengths"] for x in g]
    out["mean_response_length"] = sum(lengths) / len(lengths)
    if steering is not None:
        for prefix, block in (("", slice(0, n)), ("initial_", slice(n, 2 * n))):
            out.update(front_metrics([r[block] for r in rewards], vs, steering.grid, steering.names, steering.reference,
                                     current["lengths"] if not prefix else None, prefix))
    if oracle is None:
        return out
    if steering is None:
        oracle_probs = [torch.tensor(oracle.preferences(x, r)) for x, r in zip(texts, joint)]
    else:
        truth = [torch.tensor([oracle.attributes(x, y) for y in r]) for x, r in zip(texts, joint)]
        oracle_probs = [torch.sigmoid(steering.scores(a, v)) for a, v in zip(truth, vs)]
        if list(oracle.names) == steering.names:
            for prefix, block in (("oracle_", slice(0, n)), ("oracle_initial_", slice(n, 2 * n))):
                out.update(front_metrics([a[block] for a in truth], vs, steering.grid, steering.names,
                                         steering.reference, None, prefix))
    out.update({f"oracle_win_rate_{k}": v for k, v in win_rates(oracle_probs, n).items()})
    return out


def plot_pareto(run_dir: Path, names: list[str], reference: list[float]) -> None:
    """pareto.png (the scorer's fronts) and, with an oracle, pareto_oracle.png: the initial policy's
    front and one per iteration so far."""
    records = read_metrics(run_dir)
    for prefix, name in (("", "pareto.png"), ("oracle_", "pareto_oracle.png")):
        if f"{prefix}front" in records[0]:
            fronts = [("initial", records[0][f"{prefix}initial_front"])]
            fronts += [(f"iter {r['iteration']}", r[f"{prefix}front"]) for r in records]
            plot_fronts(fronts, names, run_dir / name, reference=reference)


def eval_path(run_dir: Path, t: int) -> Path:
    return run_dir / EVAL_DIR / f"iter_{t}.json"


def load_eval(run_dir: Path, t: int) -> dict:
    return json.loads(eval_path(run_dir, t).read_text())


def selfplay(cfg: DictConfig, workers: Workers, prompts: Prompts, run_dir: Path, start: int,
             oracle: Optional[Oracle] = None, steering: Optional[Steering] = None) -> list[dict]:
    """Iterations start+1 .. cfg.iter.  Returns their metrics records."""
    if start == 0:
        atomic_write_json(eval_path(run_dir, 0), sample_eval(workers, prompts, cfg))
    initial, previous = load_eval(run_dir, 0), load_eval(run_dir, start)
    records = []
    for t in range(start + 1, cfg.iter + 1):
        times: dict[str, float] = {}
        rollout = take_prompts(prompts, cfg, t, steering)
        with stage("generate", times):
            rollout.samples = generate(workers, rollout.prompt_ids, cfg.generator.k, cfg.generator.temperature, cfg,
                                       seed=iteration_seed(cfg, t, 1), desc="generate")
        with stage("score", times):
            rollout.scores, rollout.rewards = judge(workers, rollout.prompts, rollout.texts(), rollout.directions,
                                                    cfg, steering)
        with stage("train", times):
            train_stats = train(workers, rollout, cfg, t)
        with stage("sync", times):
            sync_weights(workers)
        with stage("eval", times):
            current = sample_eval(workers, prompts, cfg)
            result = evaluate(workers, prompts, current, initial, previous, cfg, oracle, steering)
        with stage("checkpoint", times):
            ray.get(workers.learner.save.remote(str(iteration_dir(run_dir, t))))
            if steering is not None:
                save_attributes(iteration_dir(run_dir, t), steering.names)
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
        if steering is not None:
            plot_pareto(run_dir, steering.names, steering.reference)
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
    front = f" | hypervolume {r['hypervolume']:.0f} (initial {r['initial_hypervolume']:.0f})" if "hypervolume" in r else ""
    return (f"iter {r['iteration']}: win rate vs init {r['win_rate_vs_initial']:.3f} vs prev {r['win_rate_vs_previous']:.3f}"
            f"{oracle}{front} | length {r['mean_response_length']:.1f} | loss {loss} | {stages}")
