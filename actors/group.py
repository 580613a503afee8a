"""Blocking on actor calls: the one place the driver waits for refs.

Every actor method is called as ``actor.method.remote(...)``, which returns at once with a ref; the driver
then waits here, with ``wait`` (one ref or a list) or ``gather`` (a list, with a progress bar), before it
starts the next stage.  An actor's exception is raised here, in the driver."""

from __future__ import annotations

import time
from typing import Callable

import ray
from ray.exceptions import RayActorError
from tqdm import tqdm


class StageTimeout(TimeoutError):
    """A stage's calls did not all answer within its timeout (``run.stage_timeout_s``); names who and what
    (``late``: the actors' names)."""

    def __init__(self, message: str, late: list[str] | None = None):
        super().__init__(message)
        self.late = late or []


Redo = Callable[[int, Exception], "ray.ObjectRef"]
Arrived = Callable[[int, object], None]


def gather(refs: list, desc: str, progress: bool = True, timeout_s: float | None = None,
           names: list[str] | None = None, redo: Redo | None = None, arrived: Arrived | None = None) -> list:
    """ray.get(refs) in submission order, with a progress bar that advances as calls finish.  With ``timeout_s``,
    the whole wait is bounded: a StageTimeout names ``desc`` and the actors (``names``, one per ref) still
    working.  With ``redo``, a call whose actor died (RayActorError) or did not answer in time is not an error
    here: ``redo(i, error)`` restarts its actor and returns a new ref for call i, waited on in its place (the
    bound starts again); the calls that finished are kept, never made twice.  With ``arrived``, each call's value
    is passed to ``arrived(i, value)`` as soon as it finishes (in the order they finish), e.g. to send work on it."""
    refs = list(refs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with tqdm(total=len(refs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True) as bar:
        pending = list(refs)
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not done:  # the late actors, each named once, in the order of their calls
                late_calls = [i for i, r in enumerate(refs) if r in pending]
                late = list(dict.fromkeys(names[i] if names else f"call {i}" for i in late_calls))
                error = StageTimeout(f"{desc}: {', '.join(late)} did not answer within {timeout_s:g} s", late)
                if redo is None:
                    raise error
                pending = [redo_call(refs, i, error, redo) for i in late_calls]
                deadline = time.monotonic() + timeout_s
                continue
            try:
                value = ray.get(done[0])  # raise an actor's error as soon as it happens
            except RayActorError as error:
                if redo is None:
                    raise
                pending.append(redo_call(refs, refs.index(done[0]), error, redo))
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                continue
            if arrived is not None:
                arrived(refs.index(done[0]), value)
            bar.update(len(done))
    return ray.get(refs)


def redo_call(refs: list, i: int, error: Exception, redo: Redo):
    """Call i again (``redo``), in place in ``refs``; the new ref."""
    refs[i] = redo(i, error)
    return refs[i]


def leader(refs: list, timeout_s: float | None = None, what: str = "learner") -> object:
    """Wait for every rank's ref (an error on any rank is raised here); the value of the first, rank 0's.  The
    wait is bounded by ``timeout_s`` like ``gather``'s, its error naming ``what`` and the learner ranks late."""
    return gather(refs, what, False, timeout_s, rank_names(refs))[0]


def rank_names(refs: list, first: int = 0) -> list[str]:
    """How a timeout error names the learner ranks whose refs these are (rank ``first`` onwards)."""
    return [f"learner rank {first + r}" for r in range(len(refs))]


def wait(refs, timeout_s: float | None = None, what: str = "wait"):
    """``ray.get``: the value of one ref, or the values of a list of refs in order; bounded by ``timeout_s``."""
    if isinstance(refs, list):
        return gather(refs, what, False, timeout_s)
    return gather([refs], what, False, timeout_s)[0]


def wait_named(refs: list, names: list[str], timeout_s: float, what: str) -> list:
    """``ray.get(refs)``, bounded: if some have not answered within ``timeout_s``, a StageTimeout names them
    (``gather`` without a progress bar)."""
    return gather(refs, what, False, timeout_s, names)
