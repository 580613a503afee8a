"""The run's actors as the driver holds them, and what it does when one fails (issue 17).

A generator or the scorer that dies (killed, out of memory) or does not answer within its stage's bound is
killed and started again like the first one; a generator then gets the learner's current weights (which are
the generators' own in every stage that generates: pi_{t-1} before training, pi_t after the sync), and only
the calls it had not finished are made again (``actors.group.gather``'s ``redo``).  Any other failure (the
learner, or an actor in a weight sync, a sleep or a checkpoint) is an ``ActorFailure``: the driver starts the
learner again from the last complete checkpoint and does the iteration again (its saved rollout, if scored,
is reused).  ``run.max_failures`` bounds how many failures a run survives; each is logged with the actor, the
stage and the cause, and listed in its iteration's metrics line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import ray
from omegaconf import DictConfig
from ray.exceptions import RayActorError

from actors.generator import generator_group
from actors.group import StageTimeout, gather
from actors.roles import Group

log = logging.getLogger(__name__)


class ActorFailure(RuntimeError):
    """An actor died or hung in ``stage``, where only doing the iteration again from the last checkpoint
    recovers (``selfplay.loop.driver``)."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(f"{stage}: {cause(error)}")
        self.stage, self.error = stage, error


class TooManyFailures(RuntimeError):
    """One failure more than ``run.max_failures`` (or one that is not recovered): the run stops, intact up to
    its last complete iteration."""


@contextmanager
def failing_as(stage: str) -> Iterator[None]:
    """An actor that dies or does not answer inside the block is an ActorFailure of ``stage``."""
    try:
        yield
    except (RayActorError, StageTimeout) as e:
        raise ActorFailure(stage, e) from e


def cause(error: Exception) -> str:
    """One line: the error's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


@dataclass
class Failures:
    """The run's actor failures, each ``{iteration, stage, actor, cause}``, at most ``limit`` of them."""

    limit: int = 0
    iteration: int = 0  # the driver's, for the record
    all: list[dict] = field(default_factory=list)

    def record(self, stage: str, actor: str, error: Exception) -> None:
        """Log one failure; TooManyFailures if it is one more than ``limit``."""
        failure = {"iteration": self.iteration, "stage": stage, "actor": actor, "cause": cause(error)}
        self.all.append(failure)
        where = f"iteration {self.iteration}, {stage}: {actor} failed ({failure['cause']})"
        if len(self.all) > self.limit:
            raise TooManyFailures(f"{where}; " + (f"{len(self.all)} failures, more than run.max_failures={self.limit}"
                                                  if self.limit else "run.max_failures=0: no actor is restarted"))
        log.warning("%s; restarting it (failure %d of at most %d)", where, len(self.all), self.limit)

    def of_iteration(self, t: int) -> list[dict]:
        return [{k: v for k, v in f.items() if k != "iteration"} for f in self.all if f["iteration"] == t]


@dataclass
class Spawn:
    """How the run started its actors, to start one again: ``learner(t)`` from iteration t's checkpoint
    (0: the policy the run started from); ``sync(workers, cfg, only)`` gives generators (``only`` these) the
    learner's weights (``loop.sync.sync_weights``, passed in so that this module does not import it)."""

    generator: Callable[[], object]
    scorer: Callable[[], object]
    learner: Callable[[int], object]
    sync: Callable[..., object]


@dataclass
class Workers:
    generators: list  # Generator actor handles (``generator_group``: called as one)
    scorer: object  # Scorer actor handle
    learner: object  # LearnerGroup (actors.learner): train.world_size ranks called as one
    spawn: Optional[Spawn] = None  # None: a failure is not recovered (benches, tests of one stage)
    failures: Failures = field(default_factory=Failures)

    def actors(self) -> list:
        return [*self.generators, self.scorer, *self.learner.ranks]

    def generator_group(self, only: list[int] | None = None) -> Group:
        """The generators (``only`` these, if given) called as one, each named ``generator i``; it follows the
        restarts (it holds this list, not a copy, unless ``only``)."""
        return generator_group(self.generators).only(only)

    def generator_names(self) -> list[str]:
        """How a timeout error names each generator."""
        return self.generator_group().names

    def actor_names(self) -> list[str]:
        """How a timeout error names each of ``actors()``."""
        return [*self.generator_names(), "scorer", *self.learner.names]

    def restart_generator(self, i: int, stage: str, error: Exception, cfg: DictConfig) -> object:
        """Generator i failed in ``stage``: record it, kill it, start it again and give it the learner's weights."""
        self._restartable(stage, f"generator {i}", error)
        self._weights_by_object_store(cfg, f"{stage}: generator {i} failed ({cause(error)})")
        self.generators[i] = self._replace(self.generators[i], self.spawn.generator, f"generator {i}", cfg)
        self.spawn.sync(self, cfg, only=[i])
        return self.generators[i]

    def restart_scorer(self, stage: str, error: Exception, cfg: DictConfig) -> object:
        """The scorer failed in ``stage``: record it, kill it, start it again (it holds no state of the run)."""
        self._restartable(stage, "scorer", error)
        self.scorer = self._replace(self.scorer, self.spawn.scorer, "scorer", cfg)
        return self.scorer

    def recover(self, failure: ActorFailure, last: int, cfg: DictConfig) -> None:
        """After an ActorFailure: record it; start again every generator or scorer that is dead or did not
        answer, and the learner from iteration ``last``'s checkpoint; give every generator its weights.  An
        actor that fails meanwhile is one more failure, and the recovery starts over."""
        while True:
            try:
                with failing_as("restart"):
                    return self._recover(failure, last, cfg)
            except ActorFailure as again:
                failure = again

    def _recover(self, failure: ActorFailure, last: int, cfg: DictConfig) -> None:
        late = failure.error.late if isinstance(failure.error, StageTimeout) else []
        self._restartable(failure.stage, ", ".join(late) or failed_actor(self, failure.error), failure.error)
        self._weights_by_object_store(cfg, str(failure))
        for i, name in enumerate(self.generator_names()):
            if name in late or not answers(self.generators[i], cfg):
                self.generators[i] = self._replace(self.generators[i], self.spawn.generator, name, cfg)
        if "scorer" in late or not answers(self.scorer, cfg):
            self.scorer = self._replace(self.scorer, self.spawn.scorer, "scorer", cfg)
        self.learner.stop()
        self.learner = self.spawn.learner(last)
        wait_started(self.learner.ready, self.learner.names, cfg)
        self.spawn.sync(self, cfg)  # pi_{last} everywhere, as at the start of the iteration

    def _restartable(self, stage: str, actor: str, error: Exception) -> None:
        if self.spawn is None:
            raise TooManyFailures(f"{stage}: {actor} failed ({cause(error)}); these workers are not restarted "
                                  "(no Spawn)") from error
        self.failures.record(stage, actor, error)

    def _weights_by_object_store(self, cfg: DictConfig, what: str) -> None:
        """A restarted generator or learner joins no transfer group: sync.transport=nccl|ipc stops the run."""
        if cfg.sync.transport != "object_store":
            raise TooManyFailures(f"iteration {self.failures.iteration}, {what}; with sync.transport="
                                  f"{cfg.sync.transport} actors are not restarted (the transfer group would have to "
                                  "form again): continue with run.resume=true")

    @staticmethod
    def _replace(old, start: Callable[[], object], name: str, cfg: DictConfig) -> object:
        ray.kill(old, no_restart=True)
        new = start()
        wait_started([new.__ray_ready__.remote()], [name], cfg)
        return new


def resending(sent_to: list, current: Callable[[int], object], restart: Callable[[int, Exception], object],
              send: Callable[[int], object]) -> Callable[[int, Exception], object]:
    """A ``gather`` redo for calls sent to actors: call c's actor failed, so it is restarted (``restart``) unless
    another of its calls already had it restarted (``current(c)``, the actor that now serves call c, is no
    longer ``sent_to[c]``); then c is sent again (``send``, which reads ``sent_to``)."""
    def redo(c: int, error: Exception):
        if current(c) is sent_to[c]:
            restart(c, error)
        sent_to[c] = current(c)
        return send(c)
    return redo


def failed_actor(workers: Workers, error: Exception) -> str:
    """The name of the actor a RayActorError is about (``error.actor_id``), or 'an actor'."""
    actor_id = getattr(error, "actor_id", None)
    for handle, name in zip(workers.actors(), workers.actor_names()):
        if actor_id is not None and handle._actor_id.hex() == actor_id:
            return name
    return "an actor"


def answers(actor, cfg: DictConfig) -> bool:
    """The actor is alive and idle: it answers a no-op within a minute (or the start bound, if shorter)."""
    try:
        gather([actor.__ray_ready__.remote()], "ping", False, min(60.0, stage_timeout(cfg, "start")))
        return True
    except (RayActorError, StageTimeout):
        return False


def wait_started(refs: list, names: list[str], cfg: DictConfig) -> None:
    gather(refs, "restart", False, stage_timeout(cfg, "start"), names)


def stage_timeout(cfg: DictConfig, stage: str) -> float:
    """How long a stage's calls may take together: ``run.stage_timeouts[stage]``, else ``run.stage_timeout_s``."""
    return cfg.run.stage_timeouts.get(stage, cfg.run.stage_timeout_s)
