"""What a run is given, resolved once at start and never changed: the models and data it uses (``Sources``:
the embedded world's where the config names none), the prompts (encoded) and the oracle beside the scorer.

The config itself is not written to: ``Sources.record`` gives the copy with the resolved sources filled in
that ``config.yaml`` records.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from omegaconf import DictConfig, OmegaConf

from selfplay.core.lm import Messages
from selfplay.steering.directions import Direction


@dataclass
class Oracle:
    """Ground truth beside the scorer (the embedded world's): (prompt text, responses) -> P[i][j] =
    P(y_i > y_j | x), and for runs with directions the attribute labels (0-100) of a response."""

    preferences: Callable[[str, list[str]], list[list[float]]]
    attributes: Optional[Callable[[str, str], tuple[float, ...]]] = None
    names: tuple[str, ...] = ()
    kind: Optional[Callable[[str], str]] = None  # the kind of a prompt, for win rates by kind


@dataclass
class Prompts:
    train: list[Messages]
    train_ids: list[list[int]]
    eval: list[Messages]  # the held-out prompts evaluated each iteration (with directions: x grid direction)
    eval_ids: list[list[int]]
    encode: Callable[[Messages], list[int]]  # the policy's chat template + tokenizer
    eval_directions: Optional[list[Direction]] = None
    replay: list[tuple[list[int], list[int]]] = field(default_factory=list)  # memory replay (prompt, response) ids


class RunError(RuntimeError):
    """A problem with the run directory or the named resources, found before any work."""


@dataclass(frozen=True)
class Sources:
    """The models and data of a run, by hub name or path."""

    scorer: str
    scorer_tokenizer: str
    prompts: str
    replay: Optional[str]  # memory-replay rows (algo.replay > 0), else data.replay as configured
    policy: str = ""
    policy_tokenizer: str = ""

    def record(self, cfg: DictConfig) -> DictConfig:
        """A copy of ``cfg`` with these sources in their keys: what ``config.yaml`` records."""
        return OmegaConf.merge(cfg, {
            "policy": {"model": self.policy, "tokenizer": self.policy_tokenizer},
            "scorer": {"model": self.scorer, "tokenizer": self.scorer_tokenizer},
            "data": {"prompts": self.prompts, "replay": self.replay},
        })


def resolve_data(cfg: DictConfig) -> tuple[Sources, Optional[Oracle]]:
    """The scorer, prompts and replay rows, from the embedded world where none is named (the policy comes
    later, ``resolve_policy``); with the world's prompts, also its oracle."""
    d, oracle = cfg.data, None
    scorer, prompts, replay = cfg.scorer.model, d.prompts, d.replay
    needs_replay = bool(cfg.algo.replay) and replay is None
    if cfg.policy.model is None or scorer is None or prompts is None or needs_replay:
        if cfg.policy.model is not None and scorer is None:
            raise RunError("scorer.model is required with policy.model: the embedded world's scorers only judge its own policy")
        if prompts is not None and needs_replay:
            raise RunError(f"algo.replay={cfg.algo.replay} mixes original responses into fine-tuning: name them with "
                           "data.replay (e.g. your SFT set, prompt/response rows) or set algo.replay=0")
        from selfplay.world.build import get_world

        world = get_world(cfg.world)
        scorer = scorer or world.scorer(cfg.scorer.kind, cfg.world)
        replay = world.sft_data(cfg.world) if needs_replay else replay
        if prompts is None:
            from selfplay.world import oracle as world_oracle

            prompts = world.prompts
            preferences = functools.partial(world_oracle.preference_matrix, length_by_kind=cfg.world.length_by_kind)
            oracle = Oracle(preferences, world_oracle.attributes, world_oracle.ATTRIBUTES, world_oracle.prompt_kind)
    return Sources(scorer, cfg.scorer.tokenizer or scorer, prompts, replay), oracle


def resolve_policy(cfg: DictConfig, sources: Sources, directional: bool) -> Sources:
    """``sources`` with the policy (and its tokenizer): ``policy.model``, or the embedded world's SFT policy or,
    when directions go into system prompts, its steerable warm start ([DPA]'s first iteration samples from
    a SteerLM model).  Called after the directions are validated, so a bad one fails before the warm start is
    trained."""
    policy = cfg.policy.model
    if policy is None:
        from selfplay.world.build import get_world

        world = get_world(cfg.world)
        policy = world.steerable_policy(cfg.world) if directional else world.policy
    return replace(sources, policy=policy, policy_tokenizer=cfg.policy.tokenizer or policy)
