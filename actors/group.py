"""Blocking on actor calls: the one place the driver waits for refs."""

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
