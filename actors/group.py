"""Blocking on actor calls: the one place the driver waits for refs.

Every actor method is called as ``actor.method.remote(...)``, which returns at once with a ref; the driver
then waits here, with ``wait`` (one ref or a list) or ``gather`` (a list, with a progress bar), before it
starts the next stage.  An actor's exception is raised here, in the driver."""

from __future__ import annotations

import ray
from tqdm import tqdm


def gather(refs: list, desc: str, progress: bool = True) -> list:
    """ray.get(refs) in submission order, with a progress bar that advances as calls finish."""
    with tqdm(total=len(refs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True) as bar:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # raise an actor's error as soon as it happens
            bar.update(len(done))
    return ray.get(refs)


def leader(refs: list):
    """Wait for every rank's ref (an error on any rank is raised here); the value of the first, rank 0's."""
    return gather(refs, "", progress=False)[0]


def wait(refs):
    """``ray.get``: the value of one ref, or the values of a list of refs in order."""
    return ray.get(refs)


def wait_named(refs: list, names: list[str], timeout_s: float, what: str) -> list:
    """``ray.get(refs)``, bounded: if some have not answered within ``timeout_s``, a TimeoutError names them."""
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        late = [names[i] for i, r in enumerate(refs) if r in pending]
        raise TimeoutError(f"{what}: {', '.join(late)} did not answer within {timeout_s:g} s")
    return ray.get(refs)
