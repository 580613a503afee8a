"""How a scored rollout becomes an algorithm's training examples (a TrainBatch): GPO/SPPO's
square-loss targets, preference pairs, DPA's rejection sampling and memory replay.
"""

from __future__ import annotations

import random

import torch
from omegaconf import DictConfig

from selfplay.algorithms.selection import candidate_pairs, row_means, select_pairs
from selfplay.core.batch import Rollout, TrainBatch
from selfplay.steering.directions import scalarise

ALL = "all"  # GPO/SPPO's all-K form: every response is an example


BEST_OF_N = "best_of_n"  # DPA: the best response per (prompt, direction)


# ---- targets (docs/methods.md §4, 5) ---------------------------------------------------------------------------------

def gpo_targets(scores: torch.Tensor, beta: float) -> torch.Tensor:
    """(1/beta) * s_hat(y_i > pi_t | x), s_hat_i = (1/K) sum_k S[i, k] (docs/methods.md §4).  scores (K, K) -> (K,)."""
    return row_means(scores) / beta


def sppo_targets(probs: torch.Tensor, eta: float) -> torch.Tensor:
    """eta * (P_hat(y_i > pi_t | x) - 1/2), P_hat_i = (1/K) sum_k P[i, k] (docs/methods.md §5).  probs (K, K) -> (K,)."""
    return eta * (row_means(probs) - 0.5)


# ---- building examples --------------------------------------------------------------------------------------

def _square_batch(rollout: Rollout, cfg: DictConfig, rank_and_targets) -> TrainBatch:
    """GPO/SPPO examples.  ``pairs=all``: every response with its target (docs/methods.md §4-5).  ``pairs=best_worst``:
    the public recipe (docs/methods.md §A.2): chosen = argmax, rejected = argmin of the row means of the ranking matrix,
    one example of two rows per prompt."""
    prompt_ids, response_ids, targets = [], [], []
    for p_ids, samples, scores in zip(rollout.prompt_ids, rollout.samples, rollout.scores):
        rank, t = rank_and_targets(scores)
        rows = range(len(samples)) if cfg.pairs == ALL else candidate_pairs(rank, "best_worst", None, 1)[0]
        if len(set(rows)) < len(rows):  # every response ties: no (best, worst) pair to learn from
            continue
        for i in rows:
            prompt_ids.append(p_ids)
            response_ids.append(samples[i].response_ids)
            targets.append(t[i])
    group = 1 if cfg.pairs == ALL else 2
    return TrainBatch(prompt_ids, response_ids, torch.stack(targets) if targets else torch.zeros(0), group, "previous")


def build_gpo(rollout: Rollout, cfg: DictConfig, rng: random.Random | None = None) -> TrainBatch:
    return _square_batch(rollout, cfg, lambda s: (s, gpo_targets(s, cfg.beta)))


def build_sppo(rollout: Rollout, cfg: DictConfig, rng: random.Random | None = None) -> TrainBatch:
    def rank_and_targets(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.sigmoid(scores)
        targets = sppo_targets(probs, cfg.eta)
        if cfg.hard:  # p_w -> 1, p_l -> 0 (docs/methods.md §A.2): targets +-eta/2 for the chosen / rejected row
            p = row_means(probs)
            targets = torch.full_like(p, -cfg.eta / 2)
            targets[p.argmax()] = cfg.eta / 2
        return probs, targets

    return _square_batch(rollout, cfg, rank_and_targets)


def build_pairs(rollout: Rollout, cfg: DictConfig, rng: random.Random) -> TrainBatch:
    """(chosen, rejected) examples by ``cfg.pairs``, margin-filtered (``pair_selection``); target = P(y_w > y_l)."""
    prompt_ids, response_ids, targets = [], [], []
    for p_ids, samples, scores in zip(rollout.prompt_ids, rollout.samples, rollout.scores):
        probs = torch.sigmoid(scores)
        ids = [s.response_ids for s in samples]
        for w, l in select_pairs(probs, ids, cfg.pairs, rng, cfg.max_pairs, cfg.min_prob):
            prompt_ids += [p_ids, p_ids]
            response_ids += [ids[w], ids[l]]
            targets += [probs[w, l], probs[l, w]]
    return TrainBatch(prompt_ids, response_ids, torch.stack(targets) if targets else torch.zeros(0), 2,
                      cfg.reference)


def rejection_sample(rewards: torch.Tensor, v: tuple[float, ...]) -> int:
    """DPA's rejection sampling (docs/methods.md §3): the response with the highest R(x, v, y) = v^T r(x, y).
    rewards (n, m) -> index."""
    return int(scalarise(rewards, v).argmax())


def replay_count(n: int, share: float) -> int:
    """How many replay rows make ``share`` of a fine-tuning set with ``n`` selected rows: r / (n + r) = share."""
    return round(share / (1 - share) * n)


def draw_replay(pool: list, n: int, share: float, rng: random.Random) -> list:
    """``replay_count(n, share)`` rows of ``pool`` without replacement (all of it if it is smaller)."""
    return rng.sample(pool, min(len(pool), replay_count(n, share)))


def build_dpa(rollout: Rollout, cfg: DictConfig, rng: random.Random | None = None) -> TrainBatch:
    """(system prompt with v, x) -> y* for every (prompt, direction) of the rollout, then the replay rows."""
    prompt_ids, response_ids = [], []
    for p_ids, samples, rewards, v in zip(rollout.prompt_ids, rollout.samples, rollout.rewards, rollout.directions):
        prompt_ids.append(p_ids)
        response_ids.append(samples[rejection_sample(rewards, v)].response_ids)
    for p_ids, r_ids in rollout.replay:
        prompt_ids.append(p_ids)
        response_ids.append(r_ids)
    return TrainBatch(prompt_ids, response_ids, torch.zeros(len(prompt_ids)), 1, None)
