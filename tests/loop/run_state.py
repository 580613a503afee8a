"""What a run directory holds of one iteration, and a recorder of it at every stage's entry: what a driver killed
there (``SELFPLAY_FAULT=<stage>:<t>``, ``selfplay.loop.faults``) leaves behind (tests/loop/test_resume.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from selfplay.core.checkpoint import read_metrics


def iteration_state(run_dir: Path, t: int) -> dict:
    """The metrics lines' iterations and every file of iteration ``t`` (its saved rollout, checkpoint and evaluation
    file, and any unfinished write's leftovers ``iter_<t>.tmp-*``), relative to ``run_dir``."""
    def of_t(rel: Path) -> bool:
        return any(part == f"iter_{t}" or part.startswith(f"iter_{t}.") for part in rel.parts)

    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and of_t(p.relative_to(run_dir)))
    return {"metrics": [r["iteration"] for r in read_metrics(run_dir)], "files": files}


@contextmanager
def recording_stage_entries(run_dir: Path, t: int, out: Path) -> Iterator[None]:
    """While the block runs the driver, ``iteration_state(run_dir, t)`` at each stage's entry in iteration ``t``
    (where ``SELFPLAY_FAULT`` would stop it), written to ``out`` as {stage: state} in the order entered."""
    import selfplay.loop.driver as driver

    real, entries = driver.fault_point, {}

    def record(stage: str, i: int) -> None:
        if i == t:
            entries.setdefault(stage, iteration_state(run_dir, t))
        real(stage, i)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(driver, "fault_point", record)
        yield
    out.write_text(json.dumps(entries, indent=1))
