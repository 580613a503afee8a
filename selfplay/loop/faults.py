"""Fault injection for tests of resume (issue 17): ``SELFPLAY_FAULT=<stage>:<iteration>[:raise]`` stops the
driver as it enters that stage of that iteration: by SIGKILL (the default: nothing of the driver's own clean-up
runs, as when a machine is preempted) or, with ``:raise``, by an ``InjectedFault`` exception (in-process tests,
whose Ray cluster must survive).  The stages are the loop's (``STAGES``); ``metrics`` is the commit point, the
write of the iteration's metrics line."""

from __future__ import annotations

import os
import signal

STAGES = ("generate", "score", "train", "sync", "eval", "checkpoint", "metrics")
ENV = "SELFPLAY_FAULT"


class InjectedFault(RuntimeError):
    """The driver stopped where ``SELFPLAY_FAULT`` said."""


def parse(spec: str) -> tuple[str, int, str]:
    """``stage:iteration[:kill|raise]`` -> (stage, iteration, how); ValueError naming the problem."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in STAGES or not parts[1].isdigit() or parts[2:] not in ([], ["kill"], ["raise"]):
        raise ValueError(f"{ENV}={spec!r}: expected <stage>:<iteration>[:kill|raise] with a stage of {STAGES}")
    return parts[0], int(parts[1]), (parts[2:] or ["kill"])[0]


def fault_point(stage: str, t: int) -> None:
    """Stop here if ``SELFPLAY_FAULT`` names this stage and iteration."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, iteration, how = parse(spec)
    if (name, iteration) != (stage, t):
        return
    if how == "raise":
        raise InjectedFault(f"{ENV}: stopped entering {stage} of iteration {t}")
    os.kill(os.getpid(), signal.SIGKILL)
