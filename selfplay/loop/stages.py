"""The driver's stage calls: each one fans a stage out to the actors and waits for it (``actors.group``).
"""

from __future__ import annotations

import logging
import random
import time

import torch
from omegaconf import DictConfig

from actors.group import gather, leader
from selfplay.algorithms.examples import draw_replay
from selfplay.algorithms.registry import get_algorithm, resolve
from selfplay.core.batch import Batch
from selfplay.core.lm import Messages, prompt_text
from selfplay.data.prompts import iteration_prompts
from selfplay.loop.sources import Prompts
from selfplay.loop.workers import Workers, resending, stage_timeout

log = logging.getLogger(__name__)
TIED = 1e-6  # preference log-odds at most this far from 0 are a tie


class BadNumbers(ValueError):
    """What a stage produced cannot be trained or evaluated on (all responses empty, non-finite scores, log-probs
    or losses); the driver names the iteration and the stage."""


def iteration_seed(cfg: DictConfig, t: int, salt: int) -> int:
    return (cfg.run.seed * 1_000_003 + t * 10_007 + salt * 101) % (2**31 - 1)


def generate(workers: Workers, prompt_ids: list[list[int]], n: int, temperature: float, cfg: DictConfig,
             seed: int, desc: str, stage: str = "generate") -> list[list]:
    """Shard prompts over the generator replicas (a few chunks each, for the progress bar).  With LPC, each prompt's
    code weights come from the policy's prior first (``algo.lpc.inference``) and travel with it.  Bounded by
    ``stage``'s timeout; a chunk whose generator failed is generated again by its restarted replica."""
    g, timeout_s, replicas = cfg.generator, stage_timeout(cfg, stage), len(workers.generators)
    codes = (leader(workers.learner.prompt_codes(prompt_ids, cfg.algo.lpc.inference, seed), timeout_s,
                    f"{desc}: LPC prompt codes") if resolve(cfg.algo).coded else None)
    size = -(-len(prompt_ids) // max(1, replicas * 4))
    starts = list(range(0, len(prompt_ids), size))
    sent_to = [workers.generators[c % replicas] for c in range(len(starts))]

    def send(c: int):  # seed offsets follow the global prompt index, so sharding does not change the samples
        start = starts[c]
        return sent_to[c].generate.remote(prompt_ids[start:start + size], n, temperature, g.top_p, g.max_new_tokens,
                                          seed + start * n, None if codes is None else codes[start:start + size])

    redo = resending(sent_to, lambda c: workers.generators[c % replicas],
                     lambda c, error: workers.restart_generator(c % replicas, stage, error, cfg), send)
    names = [workers.generator_names()[c % replicas] for c in range(len(starts))]  # whom a timeout names
    parts = gather([send(c) for c in range(len(starts))], desc, cfg.run.progress, timeout_s, names, redo)
    groups = [group for part in parts for group in part]
    if all(not sample.text.strip() for group in groups for sample in group):
        raise BadNumbers(f"every one of the {sum(map(len, groups))} responses is empty: the policy ends them at "
                         "once (check its chat template, EOS token and generator.max_new_tokens)")
    return groups


def score(workers: Workers, method: str, prompts: list[Messages], responses: list[list[str]],
          cfg: DictConfig) -> list[torch.Tensor]:
    """The scorer's ``method`` (``score`` for (K, K) log-odds, ``rewards`` for a multi-objective model's (K, m)
    rewards) over the prompts in chunks of about ``scorer.batch_size`` sequences, one tensor per prompt; a chunk
    whose scorer failed is scored again by the restarted scorer; non-finite values are refused, naming the
    prompt."""
    size = max(1, cfg.scorer.batch_size // max(len(responses[0]), 1))
    starts = list(range(0, len(prompts), size))
    sent_to = [workers.scorer] * len(starts)

    def send(c: int):
        return getattr(sent_to[c], method).remote(prompts[starts[c]:starts[c] + size],
                                                  responses[starts[c]:starts[c] + size])

    redo = resending(sent_to, lambda c: workers.scorer, lambda c, error: workers.restart_scorer(method, error, cfg),
                     send)
    parts = gather([send(c) for c in range(len(starts))], method, cfg.run.progress, stage_timeout(cfg, "score"),
                   ["scorer"] * len(starts), redo)
    scores = [s for part in parts for s in part]
    for i, s in enumerate(scores):
        if not torch.isfinite(s).all():
            raise BadNumbers(f"the scorer returned non-finite {method} for prompt {i}: {prompt_text(prompts[i])!r}")
    return scores


def take_prompts(prompts: Prompts, judge, cfg: DictConfig, t: int) -> Batch:
    """Iteration t's prompts (data.subsets alternate), as the judge conditions them (directions: each with
    sampled directions in its system prompt), with ids ``t/<position>``, and DPA's memory-replay rows."""
    chosen = iteration_prompts(list(zip(prompts.train, prompts.train_ids)), t, cfg.data.prompts_per_iter,
                               cfg.data.subsets)
    messages, ids, directions = judge.training_prompts([m for m, _ in chosen], [i for _, i in chosen], prompts.encode,
                                                       random.Random(iteration_seed(cfg, t, 3)))
    replay = (draw_replay(prompts.replay, len(messages), cfg.algo.replay, random.Random(iteration_seed(cfg, t, 4)))
              if cfg.algo.replay else [])
    return Batch([f"{t}/{i}" for i in range(len(ids))], ids, messages, directions, replay=replay)


def train(workers: Workers, rollout: Batch, cfg: DictConfig, t: int) -> dict:
    """Build the algorithm's examples and train on them; with nothing to learn (every response of every prompt
    tied, or every pair filtered out), say so and skip."""
    if rollout.scores and all(float(s.abs().max()) <= TIED for s in rollout.scores):
        return skip(t, "every response of every prompt tied (all preference log-odds 0): no preference to learn")
    rng = random.Random(iteration_seed(cfg, t, 2))  # pair strategies that draw (best_random)
    batch = get_algorithm(cfg.algo.name).build(rollout, cfg.algo, rng)
    if len(batch) == 0:
        return skip(t, f"no training examples: the margin filter (algo.min_prob={cfg.algo.min_prob}) and the rule "
                       "against pairs of identical or tied responses filtered out every pair")
    timeout_s = stage_timeout(cfg, "train")  # the whole stage's: the reference log-probs and every epoch
    start = time.monotonic()
    stats = leader(workers.learner.begin_iteration(batch), timeout_s, "train: reference log-probs")
    refs = [workers.learner.train_epoch(e, t) for e in range(cfg.train.epochs)]  # a list of ranks' refs each
    epochs = gather([ref for ranks in refs for ref in ranks], "train", cfg.run.progress,  # an actor runs its calls in order
                    timeout_s - (time.monotonic() - start), workers.learner.names * len(refs))
    leader_epochs = epochs[::len(refs[-1])]  # rank 0's, in order
    # the last epoch's means; every optimizer step's loss and gradient norm, over all the epochs
    return {**stats, **leader_epochs[-1], **{k: [x for e in leader_epochs for x in e[k]]
                                             for k in ("step_losses", "step_grad_norms")}}


def skip(t: int, reason: str) -> dict:
    """Iteration t trains nothing (the policy is unchanged); the metrics line records why."""
    log.warning("iteration %d: %s; skipping training (the policy is unchanged)", t, reason)
    return {"loss": None, "skipped": reason}


def sample_eval(workers: Workers, prompts: Prompts, cfg: DictConfig) -> dict:
    """Responses of the current policy on the held-out prompts (the same seeds every iteration)."""
    groups = generate(workers, prompts.eval_ids, cfg.eval.samples, cfg.eval.temperature, cfg,
                      seed=iteration_seed(cfg, 0, 7), desc="eval-gen", stage="eval")
    return {"responses": [[s.text for s in g] for g in groups],
            "lengths": [[len(s.response_ids) for s in g] for g in groups]}
