"""The driver's stage calls: each one fans a stage out to the actors and waits for it (``actors.group``).

Generation and scoring are also split in two, so that the driver can stream (``run.stream``): a submit that
sends a stage's chunks and returns their refs (``submit_generate``, ``Scoring.add``), and a collect that waits
for them (``collect``, ``Scoring.collect``), passing each chunk on as it arrives.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch
from omegaconf import DictConfig

from actors.group import Redo, gather, leader
from selfplay.algorithms.examples import draw_replay
from selfplay.algorithms.registry import get_algorithm, resolve
from selfplay.core.batch import Batch, Sample
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


@dataclass
class Calls:
    """A stage's chunks sent to its actors and not waited for yet (what ``submit_generate`` returns): one ref per
    chunk of prompts, whom a late one names, and how a chunk whose actor failed is made again."""

    refs: list
    starts: list[int]  # each chunk's first prompt
    names: list[str]  # whom a timeout names, one per chunk
    redo: Redo  # ``gather``'s: restart the chunk's actor and send the chunk again
    desc: str  # the progress bar's and the timeout error's
    stage: str  # whose bound: run.stage_timeouts


def collect(calls: Calls, cfg: DictConfig, arrived: Callable[[int, list], None] | None = None) -> list:
    """Wait for the chunks, bounded by their stage's timeout; their values joined in prompt order.  With
    ``arrived``, each chunk is passed on as soon as it is done: ``arrived(its first prompt, its values)``."""
    def chunk_done(c: int, values: list) -> None:
        arrived(calls.starts[c], values)

    parts = gather(calls.refs, calls.desc, cfg.run.progress, stage_timeout(cfg, calls.stage), calls.names,
                   calls.redo, None if arrived is None else chunk_done)
    return [value for part in parts for value in part]


def submit_generate(workers: Workers, prompt_ids: list[list[int]], n: int, temperature: float, cfg: DictConfig,
                    seed: int, desc: str, stage: str = "generate") -> Calls:
    """Shard prompts over the generator replicas (a few chunks each, for the progress bar and for streaming)
    and send them.  With LPC, each prompt's code weights come from the policy's prior first
    (``algo.lpc.inference``) and travel with it.  A chunk whose generator failed is generated again by its
    restarted replica."""
    g, replicas = cfg.generator, len(workers.generators)
    codes = (leader(workers.learner.prompt_codes(prompt_ids, cfg.algo.lpc.inference, seed), stage_timeout(cfg, stage),
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
    names = [workers.generator_names()[c % replicas] for c in range(len(starts))]
    return Calls([send(c) for c in range(len(starts))], starts, names, redo, desc, stage)


def generate(workers: Workers, prompt_ids: list[list[int]], n: int, temperature: float, cfg: DictConfig,
             seed: int, desc: str, stage: str = "generate",
             arrived: Callable[[int, list[list[Sample]]], None] | None = None) -> list[list[Sample]]:
    """n samples per prompt (``submit_generate``, then ``collect``: ``arrived`` gets each chunk as it is done),
    bounded by ``stage``'s timeout; all of them empty is refused."""
    groups = collect(submit_generate(workers, prompt_ids, n, temperature, cfg, seed, desc, stage), cfg, arrived)
    if all(not sample.text.strip() for group in groups for sample in group):
        raise BadNumbers(f"every one of the {sum(map(len, groups))} responses is empty: the policy ends them at "
                         "once (check its chat template, EOS token and generator.max_new_tokens)")
    return groups


class Scoring:
    """The scorer's ``method`` (``score`` for (K, K) log-odds, ``rewards`` for a multi-objective model's (K, m)
    rewards) over P prompts in chunks of about ``scorer.batch_size`` sequences.  ``add`` gives prompts their
    responses and sends each chunk as soon as all its prompts have them, so a chunk is scored while later
    prompts still generate (``run.stream``); the chunks are the same however the responses arrive (a chunk's
    padding changes its floats), so the scores are too.  ``collect`` waits for them: a chunk whose scorer
    failed is scored again by the restarted scorer; non-finite values are refused, naming the prompt."""

    def __init__(self, workers: Workers, method: str, prompts: list[Messages], k: int, cfg: DictConfig):
        self.workers, self.method, self.prompts, self.cfg = workers, method, prompts, cfg
        self.size = max(1, cfg.scorer.batch_size // max(k, 1))
        self.starts = list(range(0, len(prompts), self.size))
        self.responses: list[list[str] | None] = [None] * len(prompts)
        self.refs: list = [None] * len(self.starts)
        self.sent_to: list = [None] * len(self.starts)

    def add(self, start: int, responses: list[list[str]]) -> None:
        """Prompts ``start``.. have these responses; send every chunk that is complete now and not sent yet."""
        self.responses[start:start + len(responses)] = responses
        for c, first in enumerate(self.starts):
            if self.refs[c] is None and None not in self.responses[first:first + self.size]:
                self.sent_to[c] = self.workers.scorer
                self.refs[c] = self._send(c)

    def add_samples(self, start: int, groups: list[list[Sample]]) -> None:
        """``add`` for generated samples (``generate``'s ``arrived``)."""
        self.add(start, [[sample.text for sample in group] for group in groups])

    def _send(self, c: int):
        first = self.starts[c]
        return getattr(self.sent_to[c], self.method).remote(self.prompts[first:first + self.size],
                                                            self.responses[first:first + self.size])

    def all(self, responses: list[list[str]]) -> list[torch.Tensor]:
        """Every prompt's responses at once: every chunk sent, then collected."""
        self.add(0, responses)
        return self.collect()

    def collect(self) -> list[torch.Tensor]:
        """One tensor per prompt, in order, bounded by the score stage's timeout."""
        if None in self.refs:
            raise ValueError(f"{self.method}: collected before every prompt had its responses")
        redo = resending(self.sent_to, lambda c: self.workers.scorer,
                         lambda c, error: self.workers.restart_scorer(self.method, error, self.cfg), self._send)
        scores = collect(Calls(self.refs, self.starts, ["scorer"] * len(self.refs), redo, self.method, "score"),
                         self.cfg)
        for i, s in enumerate(scores):
            if not torch.isfinite(s).all():
                raise BadNumbers(f"the scorer returned non-finite {self.method} for prompt {i}: "
                                 f"{prompt_text(self.prompts[i])!r}")
        return scores


def score(workers: Workers, method: str, prompts: list[Messages], responses: list[list[str]],
          cfg: DictConfig) -> list[torch.Tensor]:
    """``Scoring`` of responses that are all there: every chunk sent at once, then collected."""
    return Scoring(workers, method, prompts, len(responses[0]), cfg).all(responses)


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
