"""Work the driver hands off its critical path: one thread that runs the newest job it was given.

The report (``log.report``) is rewritten after each iteration's commit; at smoke size that took about 1.5 s of
a 5 s iteration on the driver (docs/benchmarks.md, soak).  Here it runs beside the next iteration instead: the
driver only submits.  A job submitted while another waits replaces it (the report of iteration t + 1 supersedes
t's), so a slow report never queues up; ``close`` waits for the last one, so the run's final report is complete
when the run returns.

Off the critical path is not free where the actors use every core (2 cores here): the thread's CPU is taken
from the stages.  So with ``share``, after a job of d seconds the next waits until d / share seconds have passed
since that one began: the jobs take at most ``share`` of the wall time (``log.report_share``), and at real
iteration lengths (minutes) every iteration's drawing still runs.  ``close`` runs the waiting job at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Latest:
    """A daemon thread named ``name`` running the newest submitted job, one at a time.  A job's exception is
    logged and the thread goes on (a job that must not fail silently catches its own)."""

    def __init__(self, name: str, share: float = 1.0):
        if not 0 < share <= 1:
            raise ValueError(f"{name}: the share of the wall time its jobs may take is in (0, 1], got {share}")
        self.name, self.share = name, share
        self._wake = threading.Condition()
        self._job: Callable[[], object] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` when the thread is free, in place of any job still waiting."""
        with self._wake:
            if self._closed:
                raise RuntimeError(f"{self.name}: submit after close")
            self._job = job
            self._wake.notify()

    def close(self, timeout_s: float | None = None) -> bool:
        """Run the job still waiting, if any, then stop; wait at most ``timeout_s``.  True if the thread ended."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        rest_until = 0.0  # monotonic time before which the next job waits (``share``)
        while True:
            with self._wake:
                while not self._closed and (self._job is None or time.monotonic() < rest_until):
                    self._wake.wait(None if self._job is None else rest_until - time.monotonic())
                job, self._job = self._job, None
                if job is None:  # closed, nothing left
                    return
            began = time.monotonic()
            try:
                job()
            except Exception:  # noqa: BLE001 - the thread serves the next job
                log.exception("%s: a background job failed", self.name)
            rest_until = began + (time.monotonic() - began) / self.share
