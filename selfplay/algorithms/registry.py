"""Self-play algorithms, registered by name: how a scored rollout becomes a training Batch,
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
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.algorithms.examples import ALL, BEST_OF_N, build_dpa, build_gpo, build_pairs, build_sppo
from selfplay.algorithms.losses import (dpo_loss, ipo_loss, lpc_dpo_loss, lpc_ipo_loss, lpc_simpo_loss, sft_loss,
                                        simpo_loss, square_loss)
from selfplay.algorithms.selection import PAIR_STRATEGIES
from selfplay.core.batch import Batch


@dataclass
class LossInputs:
    """One micro-batch of E examples of G rows, as (E, G) tensors."""

    logps: torch.Tensor  # log pi_theta(y|x)
    ref_logps: torch.Tensor | None  # the reference's, cached at the start of the iteration
    targets: torch.Tensor
    lengths: torch.Tensor  # |y|, EOS included
    kl: torch.Tensor | None = None  # LPC: KL(q || p) per example (E,); None without LPC


# (inputs, algo config) -> (per-example losses (E,), metrics: name -> mean over the E examples)
Objective = Callable[[LossInputs, DictConfig], tuple[torch.Tensor, dict[str, float]]]


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


def lpc_metrics(x: LossInputs) -> dict[str, float]:
    return {} if x.kl is None else {"lpc_kl": x.kl.detach().mean().item()}


def dpo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO; with LPC (``x.kl``), LPC-DPO ([LPC] eq. 8) on the z-conditioned log-probs."""
    h = x.logps - x.ref_logps
    loss = (dpo_loss(h[:, 0], h[:, 1], cfg.beta) if x.kl is None
            else lpc_dpo_loss(h[:, 0], h[:, 1], x.kl, cfg.beta, cfg.lpc.lam))
    return loss, {**pair_metrics(cfg.beta * h[:, 0], cfg.beta * h[:, 1]), **lpc_metrics(x)}


def ipo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``ipo_loss`` on each response's log-ratio averaged over its tokens (``algo.length_normalize``, TRL's
    IPO, the form the IPO authors confirmed to TRL), or summed over them; rewards are those log-ratios.  With
    LPC, LPC-IPO ([LPC] eq. 14)."""
    h = x.logps - x.ref_logps
    if cfg.length_normalize:
        h = h / x.lengths
    loss = (ipo_loss(h[:, 0], h[:, 1], cfg.tau) if x.kl is None
            else lpc_ipo_loss(h[:, 0], h[:, 1], x.kl, cfg.tau, cfg.lpc.lam))
    return loss, {**pair_metrics(h[:, 0], h[:, 1]), **lpc_metrics(x)}


def simpo_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """SimPO; with LPC, LPC-SimPO ([LPC] eq. 13)."""
    r = cfg.beta * x.logps / x.lengths  # SimPO's implicit reward
    args = (x.logps[:, 0], x.logps[:, 1], x.lengths[:, 0], x.lengths[:, 1])
    loss = (simpo_loss(*args, cfg.beta, cfg.gamma) if x.kl is None
            else lpc_simpo_loss(*args, x.kl, cfg.beta, cfg.gamma, cfg.lpc.lam))
    return loss, {**pair_metrics(r[:, 0], r[:, 1]), **lpc_metrics(x)}


def sft_objective(x: LossInputs, cfg: DictConfig) -> tuple[torch.Tensor, dict[str, float]]:
    loss = sft_loss(x.logps[:, 0], x.lengths[:, 0])
    return loss, {"nll_per_token": loss.detach().mean().item()}


# ---- the registry -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Algorithm:
    build: Callable[[Batch, DictConfig, random.Random], Batch]
    objective: Objective
    pairs: tuple[str, ...]  # the ``algo.pairs`` values it accepts
    references: tuple[str, ...]  # the ``algo.reference`` values it accepts; () = no reference model
    params: tuple[str, ...] = ()  # the hyperparameter keys it owns (their defaults: config.schema.ALGORITHM_DEFAULTS)


ALGORITHMS: dict[str, Algorithm] = {
    "gpo": Algorithm(build_gpo, square_objective, (ALL, "best_worst"), ("previous",), ("beta",)),
    "sppo": Algorithm(build_sppo, square_objective, (ALL, "best_worst"), ("previous",), ("eta", "hard")),
    "dpo": Algorithm(build_pairs, dpo_objective, PAIR_STRATEGIES, ("initial", "previous"), ("beta",)),
    "ipo": Algorithm(build_pairs, ipo_objective, PAIR_STRATEGIES, ("initial", "previous"), ("tau", "length_normalize")),
    "simpo": Algorithm(build_pairs, simpo_objective, PAIR_STRATEGIES, (), ("beta", "gamma")),
    "dpa": Algorithm(build_dpa, sft_objective, (BEST_OF_N,), (), ("replay", "init")),
}


HYPERPARAMETERS = ("beta", "eta", "tau", "gamma", "hard", "length_normalize", "replay", "init")  # algo keys owned by some algorithms only


INITS = ("sft", "previous")  # DPA: where each iteration's fine-tuning starts


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo.name '{name}' (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]


def check_algo(cfg: DictConfig) -> None:
    """Check ``cfg`` (the ``algo`` section, its unset keys already its algorithm's defaults) against its algorithm.

    Raises ValueError naming the key at fault: a hyperparameter another algorithm owns, a pair strategy or
    reference the algorithm does not know, a margin filter that can never keep a pair.  Writes nothing.
    """
    algo = get_algorithm(cfg.name)
    for key in HYPERPARAMETERS:
        if key not in algo.params and cfg[key] is not None:
            owners = [n for n, a in ALGORITHMS.items() if key in a.params]
            raise ValueError(f"algo.{key} applies to {'/'.join(owners)}, not to algo.name={cfg.name}")
        if key in algo.params and cfg[key] is None:
            raise ValueError(f"algo.{key} must be set for {cfg.name}")
    if cfg.pairs not in algo.pairs:
        raise ValueError(f"algo.pairs='{cfg.pairs}' is not a pair strategy of {cfg.name}; it takes {algo.pairs}")
    if not algo.references:
        if cfg.reference is not None:
            raise ValueError(f"{cfg.name} uses no reference model; remove algo.reference={cfg.reference}")
    elif cfg.reference not in algo.references:
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
    check_lpc(cfg)


LPC_ALGORITHMS = ("dpo", "ipo", "simpo")  # [LPC] eqs. 8, 14, 13
LPC_SCHEDULES = ("iteration", "run")  # what g rises over
LPC_INFERENCE = ("mean", "sample")


def check_lpc(cfg: DictConfig) -> None:
    lpc = cfg.lpc
    if lpc.codes < 0:
        raise ValueError(f"algo.lpc.codes is the codebook's size (0: off), got {lpc.codes}")
    if lpc.codes and cfg.name not in LPC_ALGORITHMS:
        raise ValueError(f"algo.lpc applies to the pair losses {'/'.join(LPC_ALGORITHMS)}, not to {cfg.name}")
    if lpc.lam < 0:
        raise ValueError(f"algo.lpc.lam weighs KL(q || p) and must be >= 0, got {lpc.lam}")
    if lpc.lr is not None and not lpc.lr > 0:
        raise ValueError(f"algo.lpc.lr must be > 0 (or unset: train.lr), got {lpc.lr}")
    if lpc.init_std < 0:
        raise ValueError(f"algo.lpc.init_std is the codebook's initial standard deviation, >= 0, got {lpc.init_std}")
    if not lpc.gumbel_tau > 0:
        raise ValueError(f"algo.lpc.gumbel_tau must be > 0, got {lpc.gumbel_tau}")
    if lpc.mlp_hidden is not None and lpc.mlp_hidden < 1:
        raise ValueError(f"algo.lpc.mlp_hidden must be >= 1 (or unset), got {lpc.mlp_hidden}")
    if lpc.g_over not in LPC_SCHEDULES:
        raise ValueError(f"algo.lpc.g_over must be one of {LPC_SCHEDULES}, got '{lpc.g_over}'")
    if lpc.inference not in LPC_INFERENCE:
        raise ValueError(f"algo.lpc.inference must be one of {LPC_INFERENCE}, got '{lpc.inference}'")
