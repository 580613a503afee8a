"""Self-play algorithms, registered by name: how a scored rollout becomes a TrainBatch,
and which loss trains on it.  The loop looks an algorithm up; it never branches on one.

| algo  | examples                                       | loss (``losses``)              | reference      |
|-------|------------------------------------------------|--------------------------------|----------------|
| gpo   | all K responses, or the A.2 pair (``pairs``)   | square, target s_hat / beta    | pi_t           |
| sppo  | all K responses, or the A.2 pair (``pairs``)   | square, target eta (P_hat-1/2) | pi_t           |
| dpo   | (chosen, rejected) by a pair strategy          | -log sigma(beta (h_w - h_l))   | pi_0 or pi_t   |
| ipo   | (chosen, rejected) by a pair strategy          | (h_w - h_l - 1/(2 tau))^2      | pi_0 or pi_t   |
| simpo | (chosen, rejected) by a pair strategy          | length-normalised, margin gamma| none           |
| dpa   | per (prompt, v): argmax_i v^T r_i, + replay    | SFT next-token loss            | none           |
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from selfplay.batch import Rollout, TrainBatch
from selfplay.directions import scalarise
from selfplay.losses import dpo_loss, ipo_loss, sft_loss, simpo_loss, square_loss
from selfplay.pair_selection import PAIR_STRATEGIES, candidate_pairs, select_pairs, win_rates

ALL = "all"  # GPO/SPPO's all-K form: every response is an example
BEST_OF_N = "best_of_n"  # DPA: the best response per (prompt, direction)


@dataclass
class LossInputs:
    """One micro-batch of E examples of G rows, as (E, G) tensors."""

    logps: torch.Tensor  # log pi_theta(y|x)
    ref_logps: torch.Tensor | None  # the reference's, cached at the start of the iteration
    targets: torch.Tensor
    lengths: torch.Tensor  # |y|, EOS included


# (inputs, algo config) -> (per-example losses (E,), metrics: name -> mean over the E examples)
Objective = Callable[[LossInputs, DictConfig], tuple[torch.Tensor, dict[str, float]]]


# ---- targets (METHODS 4, 5) ---------------------------------------------------------------------------------

def gpo_targets(scores: torch.Tensor, beta: float) -> torch.Tensor:
    """(1/beta) * s_hat(y_i > pi_t | x), s_hat_i = (1/K) sum_k S[i, k] (METHODS 4).  scores (K, K) -> (K,)."""
    return win_rates(scores) / beta


def sppo_targets(probs: torch.Tensor, eta: float) -> torch.Tensor:
    """eta * (P_hat(y_i > pi_t | x) - 1/2), P_hat_i = (1/K) sum_k P[i, k] (METHODS 5).  probs (K, K) -> (K,)."""
    return eta * (win_rates(probs) - 0.5)


# ---- building examples --------------------------------------------------------------------------------------

def _square_batch(rollout: Rollout, cfg: DictConfig, rank_and_targets) -> TrainBatch:
    """GPO/SPPO examples.  ``pairs=all``: every response with its target (METHODS 4-5).  ``pairs=best_worst``:
    the public recipe (METHODS A.2): chosen = argmax, rejected = argmin of the row means of the ranking matrix,
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
        if cfg.hard:  # p_w -> 1, p_l -> 0 (METHODS A.2): targets +-eta/2 for the chosen / rejected row
            p = win_rates(probs)
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
    """DPA's rejection sampling (METHODS 3): the response with the highest R(x, v, y) = v^T r(x, y).
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


# ---- objectives ---------------------------------------------------------------------------------------------

def square_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``square_loss`` averaged over an example's rows: for a pair, A.2's [(a_w - t_w)^2 + (a_l - t_l)^2] / 2."""
    residual = (x.logps - x.ref_logps - x.targets).detach()
    metrics = {"mean_target": x.targets.mean().item(), "abs_residual": residual.abs().mean().item()}
    return square_loss(x.logps, x.ref_logps, x.targets).mean(dim=1), metrics


def pair_metrics(r_w: torch.Tensor, r_l: torch.Tensor) -> dict[str, float]:
    """TRL's DPO metrics on implicit rewards: accuracy (r_w > r_l), margin, and each side's mean."""
    r_w, r_l = r_w.detach(), r_l.detach()
    return {"reward_accuracy": (r_w > r_l).float().mean().item(), "reward_margin": (r_w - r_l).mean().item(),
            "chosen_reward": r_w.mean().item(), "rejected_reward": r_l.mean().item()}


def dpo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    h = x.logps - x.ref_logps
    return dpo_loss(h[:, 0], h[:, 1], cfg.beta), pair_metrics(cfg.beta * h[:, 0], cfg.beta * h[:, 1])


def ipo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    h = x.logps - x.ref_logps
    return ipo_loss(h[:, 0], h[:, 1], cfg.tau), pair_metrics(h[:, 0], h[:, 1])


def simpo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    r = cfg.beta * x.logps / x.lengths  # SimPO's implicit reward
    loss = simpo_loss(x.logps[:, 0], x.logps[:, 1], x.lengths[:, 0], x.lengths[:, 1], cfg.beta, cfg.gamma)
    return loss, pair_metrics(r[:, 0], r[:, 1])


def sft_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    loss = sft_loss(x.logps[:, 0], x.lengths[:, 0])
    return loss, {"nll_per_token": loss.detach().mean().item()}


# ---- the registry -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Algorithm:
    build: Callable[[Rollout, DictConfig, random.Random], TrainBatch]
    objective: Objective
    pairs: tuple[str, ...]  # the ``algo.pairs`` values it accepts; the first is its default
    references: tuple[str, ...]  # the ``algo.reference`` values it accepts; the first is its default; () = none
    params: dict[str, Any] = field(default_factory=dict)  # its hyperparameters and their defaults


ALGORITHMS: dict[str, Algorithm] = {
    "gpo": Algorithm(build_gpo, square_objective, (ALL, "best_worst"), ("previous",), {"beta": 2.0}),
    "sppo": Algorithm(build_sppo, square_objective, (ALL, "best_worst"), ("previous",), {"eta": 4.0, "hard": False}),
    "dpo": Algorithm(build_pairs, dpo_objective, PAIR_STRATEGIES, ("initial", "previous"), {"beta": 0.1}),
    "ipo": Algorithm(build_pairs, ipo_objective, PAIR_STRATEGIES, ("initial", "previous"), {"tau": 0.01}),
    "simpo": Algorithm(build_pairs, simpo_objective, PAIR_STRATEGIES, (), {"beta": 2.0, "gamma": 1.0}),
    "dpa": Algorithm(build_dpa, sft_objective, (BEST_OF_N,), (), {"replay": 0.15, "init": "sft"}),
}
HYPERPARAMETERS = ("beta", "eta", "tau", "gamma", "hard", "replay", "init")  # algo keys owned by some algorithms only
INITS = ("sft", "previous")  # DPA: where each iteration's fine-tuning starts


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo.name '{name}' (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]


def resolve_algo(cfg: DictConfig) -> None:
    """Check ``cfg`` (the ``algo`` section) against its algorithm and fill the unset keys with its defaults.

    Raises ValueError naming the key at fault: a hyperparameter another algorithm owns, a pair strategy or
    reference the algorithm does not know, a margin filter that can never keep a pair.
    """
    algo = get_algorithm(cfg.name)
    for key in HYPERPARAMETERS:
        if key not in algo.params and cfg[key] is not None:
            owners = [n for n, a in ALGORITHMS.items() if key in a.params]
            raise ValueError(f"algo.{key} applies to {'/'.join(owners)}, not to algo.name={cfg.name}")
        if key in algo.params and cfg[key] is None:
            cfg[key] = algo.params[key]
    cfg.pairs = cfg.pairs if cfg.pairs is not None else algo.pairs[0]
    if cfg.pairs not in algo.pairs:
        raise ValueError(f"algo.pairs='{cfg.pairs}' is not a pair strategy of {cfg.name}; it takes {algo.pairs}")
    if not algo.references:
        if cfg.reference is not None:
            raise ValueError(f"{cfg.name} uses no reference model; remove algo.reference={cfg.reference}")
    else:
        cfg.reference = cfg.reference if cfg.reference is not None else algo.references[0]
        if cfg.reference not in algo.references:
            raise ValueError(f"algo.reference='{cfg.reference}' is not available to {cfg.name}; "
                             f"it takes {algo.references}")
    if cfg.hard and cfg.pairs == ALL:
        raise ValueError("algo.hard=true is SPPO's pair recipe (p_w = 1, p_l = 0): set algo.pairs=best_worst")
    if not 0.0 <= cfg.min_prob <= 1.0:
        raise ValueError(f"algo.min_prob is a probability in [0, 1], got {cfg.min_prob}"
                         + (": no pair could pass the margin filter" if cfg.min_prob > 1 else ""))
    if cfg.min_prob > 0 and ALL in algo.pairs:  # the square-loss algorithms
        raise ValueError(f"algo.min_prob filters preference pairs; {cfg.name} trains on every response or on "
                         "A.2's (best, worst) pair unfiltered")
    if cfg.max_pairs < 1:
        raise ValueError(f"algo.max_pairs must be >= 1, got {cfg.max_pairs}")
    for key in ("beta", "eta", "tau"):
        if key in algo.params and not cfg[key] > 0:
            raise ValueError(f"algo.{key} must be > 0, got {cfg[key]}")
    if "replay" in algo.params and not 0.0 <= cfg.replay < 1.0:
        raise ValueError(f"algo.replay is the replay share of the fine-tuning data, in [0, 1), got {cfg.replay}")
    if "init" in algo.params and cfg.init not in INITS:
        raise ValueError(f"algo.init must be one of {INITS}, got '{cfg.init}'")
