"""A run's start, overlapped (issue 29): the driver checks its inputs on a thread while Ray starts, and each
actor's process is started as soon as Ray is up, before its spec is known, importing its role's libraries
meanwhile (vLLM alone is about 8 s of CPU here); ``selfplay.run.start_workers`` then gives each its spec.

    main thread:   ray.init ──> actors' processes (they import) ─────────────> specs ──> ready ──> loop
    check thread:  sources, models, plan, tokenizer, prompts, run dir ──┘

A check that refuses the run still refuses it before any actor gets a model or a run directory is written; the
processes started meanwhile are stopped (and Ray, if the run started it).  Each actor's options (its resources,
node affinity and threads) are made here once, for the first start and for every restart."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import ray
from omegaconf import DictConfig

from actors.generator import GenerationWorker
from actors.learner import LearnerGroup
from actors.scorer import ScoringWorker

T = TypeVar("T")


class InBackground(Generic[T]):
    """``fn()`` on a daemon thread (an interrupted driver does not wait for it); ``result()`` waits for its value
    or raises its exception."""

    def __init__(self, fn: Callable[[], T], name: str):
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            self._error = e

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def threads(share: int = 1) -> dict[str, str]:
    """The environment of an actor using 1/``share`` of this machine's cores (num_cpus=0 actors would get 1)."""
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // share))}


def affinity(resource: str | None) -> dict[str, float]:
    """Node affinity: a small share of the role's custom resource (``placement.*_resource``)."""
    return {resource: 0.01} if resource else {}


def generator_options(cfg: DictConfig) -> dict:
    g = cfg.generator
    return {"num_cpus": g.num_cpus, "num_gpus": g.num_gpus, "runtime_env": {"env_vars": threads()},
            "resources": affinity(cfg.placement.generator_resource)}


def scorer_options(cfg: DictConfig) -> dict:
    s = cfg.scorer
    return {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus, "runtime_env": {"env_vars": threads()},
            "resources": affinity(cfg.placement.scorer_resource)}


def learner_placement(cfg: DictConfig) -> tuple[dict[str, str], str, dict[str, float]]:
    """The ranks' environment, placement strategy and custom resources (``LearnerGroup.start``'s arguments)."""
    return threads(cfg.train.world_size), cfg.placement.strategy, affinity(cfg.placement.learner_resource)


def role_imports(cfg: DictConfig) -> dict[str, tuple[str, ...]]:
    """What each role's process imports before its spec comes: the libraries its build needs (the learner no
    vLLM, the scorer neither vLLM nor PEFT)."""
    engine = ("vllm.entrypoints.llm",) if cfg.generator.backend == "vllm" else ("transformers.generation",)
    models = ("transformers.modeling_utils", "transformers.models.auto.modeling_auto")
    return {"generator": ("selfplay.policy.engines", *engine),
            "scorer": ("selfplay.models.kinds", "selfplay.models.pairrm", *models),
            "learner": ("selfplay.policy.trainer", "selfplay.policy.parallel", *models)
                       + (("peft",) if cfg.train.lora.rank > 0 else ())}


@dataclass
class Processes:
    """The actors' processes, started before their specs: ``generator.replicas`` generators, the scorer and the
    learner's ranks (``LearnerGroup.create``); ``selfplay.run.start_workers`` sets each up (``stop`` kills them)."""

    generators: list
    scorer: object
    learner: LearnerGroup

    @classmethod
    def start(cls, cfg: DictConfig) -> Processes:
        imports = role_imports(cfg)
        generators = [GenerationWorker.options(**generator_options(cfg)).remote(None, imports["generator"])
                      for _ in range(cfg.generator.replicas)]
        scorer = ScoringWorker.options(**scorer_options(cfg)).remote(None, imports["scorer"])
        return cls(generators, scorer, LearnerGroup.create(cfg.train, *learner_placement(cfg), imports["learner"]))


def stop(actors) -> None:
    """Kill the generators, the scorer and the learner's ranks of ``actors`` (``Processes`` or ``Workers``)."""
    for actor in [*actors.generators, actors.scorer]:
        ray.kill(actor)
    actors.learner.stop()
