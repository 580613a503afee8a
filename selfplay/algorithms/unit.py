"""What an algorithm is: one unit that holds its hyperparameters (a config dataclass with defaults, which the
schema composes into ``algo``), how a scored rollout becomes its examples, its loss, what it refuses and its
traits.  The loader, the learner and the driver ask the unit; none of them tests an algorithm's name.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from selfplay.core.batch import Batch

# The ``algo`` keys every algorithm may declare in its config besides its own hyperparameters.
SHARED_KEYS = ("pairs", "reference")


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
Builder = Callable[[Batch, DictConfig, random.Random], Batch]
Refusals = Callable[[DictConfig], list[str]]


def _accepts_all(cfg: DictConfig) -> list[str]:
    return []


@dataclass(frozen=True)
class Algorithm:
    """One algorithm.  ``config``'s fields are the ``algo`` keys it owns, with their defaults (``pairs`` and
    ``reference`` among them where it has them); ``refuse(cfg)`` lists what it refuses in a full ``algo``
    section, one message per problem, each naming the key."""

    name: str
    config: type
    build: Builder
    objective: Objective
    pairs: tuple[str, ...]  # the ``algo.pairs`` values it accepts
    references: tuple[str, ...] = ()  # the ``algo.reference`` values it accepts; () = no reference model
    on_policy: bool = False  # its targets are estimated against the sampling policy pi_t, from every response
    needs_directions: bool = False  # it ranks responses by v^T r: a multi-objective scorer and directions
    codable: bool = False  # LPC (``selfplay.algorithms.latent``) may wrap it: [LPC] gives its coded loss
    coded: bool = False  # it trains latent preference codes beside the policy (the LPC wrapper)
    refuse: Refusals = _accepts_all

    @property
    def reference_free(self) -> bool:
        return not self.references

    @property
    def params(self) -> tuple[str, ...]:
        """The hyperparameter keys it owns (its config's fields but ``pairs`` and ``reference``)."""
        return tuple(f.name for f in dataclasses.fields(self.config) if f.name not in SHARED_KEYS)

    def defaults(self) -> dict:
        """Its config's defaults: every key it owns, ``pairs`` and (with a reference) ``reference``."""
        return dataclasses.asdict(self.config())


def positive(cfg: DictConfig, *keys: str) -> list[str]:
    """The refusal of each ``algo`` key in ``keys`` that is not > 0."""
    return [f"algo.{k} must be > 0, got {cfg[k]}" for k in keys if not cfg[k] > 0]


def pair_metrics(r_w: torch.Tensor, r_l: torch.Tensor) -> dict[str, float]:
    """TRL's DPO metrics on implicit rewards: accuracy (r_w > r_l), margin, and each side's mean."""
    r_w, r_l = r_w.detach(), r_l.detach()
    return {"reward_accuracy": (r_w > r_l).float().mean().item(), "reward_margin": (r_w - r_l).mean().item(),
            "chosen_reward": r_w.mean().item(), "rejected_reward": r_l.mean().item()}


def log_ratios(x: LossInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_w, h_l): each pair's chosen and rejected log-ratio log pi_theta(y|x) - log pi_ref(y|x), (E,) each."""
    h = x.logps - x.ref_logps
    return h[:, 0], h[:, 1]
