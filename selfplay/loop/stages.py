"""The driver's stage calls: each one fans a stage out to the actors and waits for it (``actors.group``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from actors.generator import GeneratorsClient
from actors.group import gather, leader, rank_names, wait_named
from selfplay.algorithms.examples import draw_replay
from selfplay.algorithms.registry import get_algorithm
from selfplay.core.batch import Batch
from selfplay.core.lm import Messages, prompt_text
from selfplay.data.prompts import iteration_prompts
from selfplay.loop.plan import Prompts

log = logging.getLogger(__name__)


@dataclass
class Workers:
    generators: list  # Generator actor handles
    scorer: object  # Scorer actor handle
    learner: object  # LearnerGroup (actors.learner): train.world_size ranks called as one

    def actors(self) -> list:
        return [*self.generators, self.scorer, *self.learner.ranks]

    def generator_names(self) -> list[str]:
        """How a timeout error names each generator."""
        return [f"generator {i}" for i in range(len(self.generators))]

    def actor_names(self) -> list[str]:
        """How a timeout error names each of ``actors()``."""
        return [*self.generator_names(), "scorer", *rank_names(self.learner.ranks)]


def stage_timeout(cfg: DictConfig, stage: str) -> float:
    """How long a stage's calls may take together: ``run.stage_timeouts[stage]``, else ``run.stage_timeout_s``."""
    return cfg.run.stage_timeouts.get(stage, cfg.run.stage_timeout_s)


def iteration_seed(cfg: DictConfig, t: int, salt: int) -> int:
    return (cfg.run.seed * 1_000_003 + t * 10_007 + salt * 101) % (2**31 - 1)


def generate(workers: Workers, prompt_ids: list[list[int]], n: int, temperature: float, cfg: DictConfig,
             seed: int, desc: str, stage: str = "generate") -> list[list]:
    """Shard prompts over the generator replicas (a few chunks each, for the progress bar).  With LPC, each prompt's
    code weights come from the policy's prior first (``algo.lpc.inference``) and travel with it.  Bounded by
    ``stage``'s timeout."""
    g, timeout_s = cfg.generator, stage_timeout(cfg, stage)
    codes = (leader(workers.learner.prompt_codes(prompt_ids, cfg.algo.lpc.inference, seed), timeout_s,
                    f"{desc}: LPC prompt codes") if cfg.algo.lpc.codes else None)
    chunks = max(1, len(workers.generators) * 4)
    size = -(-len(prompt_ids) // chunks)
    refs, names = [], []
    for c, start in enumerate(range(0, len(prompt_ids), size)):
        actor = workers.generators[c % len(workers.generators)]
        names.append(workers.generator_names()[c % len(workers.generators)])
        # Seed offsets follow the global prompt index, so sharding does not change the samples.
        refs.append(actor.generate.remote(prompt_ids[start:start + size], n, temperature, g.top_p,
                                          g.max_new_tokens, seed + start * n,
                                          None if codes is None else codes[start:start + size]))
    return [group for part in gather(refs, desc, cfg.run.progress, timeout_s, names) for group in part]


def score(call, prompts: list[Messages], responses: list[list[str]], cfg: DictConfig, what: str) -> list[torch.Tensor]:
    """``call`` (a scorer actor method: ``score`` for (K, K) log-odds, ``rewards`` for a multi-objective model's
    (K, m) rewards) over the prompts in chunks of about ``scorer.batch_size`` sequences, one tensor per prompt;
    non-finite values are refused, naming the prompt."""
    size = max(1, cfg.scorer.batch_size // max(len(responses[0]), 1))
    refs = [call.remote(prompts[i:i + size], responses[i:i + size]) for i in range(0, len(prompts), size)]
    scores = [s for part in gather(refs, what, cfg.run.progress, stage_timeout(cfg, "score"), ["scorer"] * len(refs))
              for s in part]
    for i, s in enumerate(scores):
        if not torch.isfinite(s).all():
            raise FloatingPointError(f"the scorer returned non-finite {what} for prompt {i}: {prompt_text(prompts[i])!r}")
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
    """Build the algorithm's examples and train on them; with none (every pair filtered out), say so and skip."""
    rng = random.Random(iteration_seed(cfg, t, 2))  # pair strategies that draw (best_random)
    batch = get_algorithm(cfg.algo.name).build(rollout, cfg.algo, rng)
    if len(batch) == 0:
        reason = (f"no training examples: the margin filter (algo.min_prob={cfg.algo.min_prob}) and the "
                  "rule against pairs of identical or tied responses filtered out every pair")
        log.warning("iteration %d: %s; skipping training (the policy is unchanged)", t, reason)
        return {"loss": None, "skipped": reason}
    timeout_s = stage_timeout(cfg, "train")  # the whole stage's: the reference log-probs and every epoch
    start = time.monotonic()
    stats = leader(workers.learner.begin_iteration(batch), timeout_s, "train: reference log-probs")
    refs = [workers.learner.train_epoch(e, t) for e in range(cfg.train.epochs)]  # a list of ranks' refs each
    epochs = gather([ref for ranks in refs for ref in ranks], "train", cfg.run.progress,  # an actor runs its calls in order
                    timeout_s - (time.monotonic() - start), rank_names(refs[0]) * len(refs))
    leader_epochs = epochs[::len(refs[-1])]  # rank 0's, in order
    # the last epoch's means; every optimizer step's loss and gradient norm, over all the epochs
    return {**stats, **leader_epochs[-1], **{k: [x for e in leader_epochs for x in e[k]]
                                             for k in ("step_losses", "step_grad_norms")}}


@contextmanager
def generators_asleep(workers: Workers, cfg: DictConfig, times: dict[str, float]) -> Iterator[None]:
    """Colocated mode (``placement.colocate``): the generators sleep while the block runs, so the learner has the
    devices, and wake after it; ``sleep_s`` / ``wake_s`` go into ``times``.  At level 2 their weights are gone
    until the weight sync, which must come next.  Without colocation, nothing."""
    if not cfg.placement.colocate:
        yield
        return
    names = workers.generator_names()
    start = time.perf_counter()
    wait_named([g.sleep.remote(cfg.placement.sleep_level) for g in workers.generators], names, cfg.sync.timeout_s,
               "sleep")
    times["sleep_s"] = round(time.perf_counter() - start, 3)
    try:
        yield
    finally:
        start = time.perf_counter()
        wait_named([g.wake_up.remote() for g in workers.generators], names, cfg.sync.timeout_s, "wake up")
        times["wake_s"] = round(time.perf_counter() - start, 3)


def connect_weight_transfer(workers: Workers, cfg: DictConfig) -> None:
    """``sync.transport=nccl|ipc``: the learner ranks and the generators meet once, for vLLM's native weight
    transfer (``selfplay.policy.weight_transfer``); the object store needs nothing."""
    if cfg.sync.transport == "object_store":
        return
    client = GeneratorsClient(workers.generators, cfg.generator.tensor_parallel, cfg.sync.timeout_s)
    dtype = getattr(torch, cfg.generator.dtype or cfg.policy.dtype)
    ranks = workers.learner.connect_generators(cfg.sync.transport, client,
                                               len(workers.generators) * cfg.generator.tensor_parallel,
                                               int(cfg.sync.bucket_mb * 2**20), dtype)
    wait_named(ranks, rank_names(ranks), 2 * cfg.sync.timeout_s,
               "weight transfer rendezvous")


def send_code_table(workers: Workers, cfg: DictConfig) -> None:
    """LPC: the generators get W E, each code's logit shift, from the learner (``selfplay.policy.lpc``)."""
    if not cfg.algo.lpc.codes:
        return
    import ray

    table = ray.put(leader(workers.learner.code_table()))
    wait_named([g.set_code_table.remote(table) for g in workers.generators],
               workers.generator_names(), cfg.sync.timeout_s, "LPC code table")


def sync_weights(workers: Workers, cfg: DictConfig) -> int:
    """Learner -> every generator, in buckets of whole layers (``selfplay.policy.weight_sync``) through the object
    store, loaded in place; bucket i + 1 is gathered and packed while the generators load bucket i.  Each bucket
    is bounded by ``sync.timeout_s``, whose error names the generator that did not answer.  Returns the number
    of buckets.  With ``sync.transport=nccl|ipc``, learner rank 0 streams them to the generators itself over
    vLLM's transfer (each of its calls to them bounded the same way)."""
    send_code_table(workers, cfg)
    if cfg.sync.transport != "object_store":
        ranks = workers.learner.send_weights()
        # start, update and finish are each bounded inside; this bounds a broadcast that a dead generator left
        return wait_named(ranks, rank_names(ranks), 3 * cfg.sync.timeout_s,
                          "weight sync")[0]
    names = workers.generator_names()
    n = leader(workers.learner.plan_sync(int(cfg.sync.bucket_mb * 2**20)))
    parts = workers.learner.weight_bucket(0)  # rank 0's packed bucket first; the other ranks help gather it
    for i in range(n):
        loads = [g.load_bucket.remote(parts[0]) for g in workers.generators]
        helpers = parts[1:]
        parts = workers.learner.weight_bucket(i + 1) if i + 1 < n else []
        wait_named(loads + helpers, names + rank_names(helpers, first=1),
                   cfg.sync.timeout_s, f"weight sync, bucket {i + 1} of {n}")
    wait_named([g.finish_sync.remote() for g in workers.generators], names, cfg.sync.timeout_s, "weight sync")
    return n


def sample_eval(workers: Workers, prompts: Prompts, cfg: DictConfig) -> dict:
    """Responses of the current policy on the held-out prompts (the same seeds every iteration)."""
    groups = generate(workers, prompts.eval_ids, cfg.eval.samples, cfg.eval.temperature, cfg,
                      seed=iteration_seed(cfg, 0, 7), desc="eval-gen", stage="eval")
    return {"responses": [[s.text for s in g] for g in groups],
            "lengths": [[len(s.response_ids) for s in g] for g in groups]}
