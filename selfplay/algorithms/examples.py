"""How a scored rollout becomes an algorithm's training examples (a ``Batch`` of one group per example, each
keeping its prompt's id), the parts several algorithms share: GPO/SPPO's square-loss examples, preference pairs,
DPA's rejection sampling and memory replay (the world and the loop use these two as well).
"""

from __future__ import annotations

import random

import torch
from omegaconf import DictConfig

from selfplay.algorithms.selection import candidate_pairs, select_pairs
from selfplay.core.batch import Batch
from selfplay.steering.directions import scalarise

ALL = "all"  # GPO/SPPO's all-K form: every response is an example


BEST_OF_N = "best_of_n"  # DPA: the best response per (prompt, direction)


# ---- building examples --------------------------------------------------------------------------------------

def _targets(targets: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(targets) if targets else torch.zeros(0)


def square_batch(rollout: Batch, cfg: DictConfig, rank_and_targets) -> Batch:
    """GPO/SPPO examples.  ``pairs=all``: every response with its target (docs/methods.md §4-5).  ``pairs=best_worst``:
    the public recipe (docs/methods.md §A.2): chosen = argmax, rejected = argmin of the row means of the ranking matrix,
    one example of two rows per prompt."""
    group = 1 if cfg.pairs == ALL else 2
    uids, prompt_ids, response_ids, targets = [], [], [], []
    for uid, p_ids, responses, scores in zip(rollout.uids, rollout.prompt_ids, rollout.grouped(rollout.response_ids),
                                             rollout.scores):
        rank, t = rank_and_targets(scores)
        rows = range(len(responses)) if cfg.pairs == ALL else candidate_pairs(rank, "best_worst", None, 1)[0]
        if len(set(rows)) < len(rows):  # every response ties: no (best, worst) pair to learn from
            continue
        uids += [uid] * (len(rows) // group)
        prompt_ids += [p_ids] * (len(rows) // group)
        response_ids += [responses[i] for i in rows]
        targets += [t[i] for i in rows]
    return Batch.examples(uids, prompt_ids, response_ids, _targets(targets), group, "previous")


def build_pairs(rollout: Batch, cfg: DictConfig, rng: random.Random) -> Batch:
    """(chosen, rejected) examples by ``cfg.pairs``, margin-filtered (``pair_selection``); target = P(y_w > y_l)."""
    uids, prompt_ids, response_ids, targets = [], [], [], []
    for uid, p_ids, ids, scores in zip(rollout.uids, rollout.prompt_ids, rollout.grouped(rollout.response_ids),
                                       rollout.scores):
        probs = torch.sigmoid(scores)
        for w, l in select_pairs(probs, ids, cfg.pairs, rng, cfg.max_pairs, cfg.min_prob):
            uids.append(uid)
            prompt_ids.append(p_ids)
            response_ids += [ids[w], ids[l]]
            targets += [probs[w, l], probs[l, w]]
    return Batch.examples(uids, prompt_ids, response_ids, _targets(targets), 2, cfg.reference)


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
