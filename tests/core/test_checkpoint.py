"""Atomic run-directory writes, metrics records and resume detection."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from selfplay.core.checkpoint import (
    append_metrics,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_incomplete,
    iteration_dir,
    last_complete_iteration,
    read_metrics,
)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def make_iterations(run_dir: Path, dirs: range, records: range) -> None:
    for n in dirs:
        iteration_dir(run_dir, n).mkdir()
    for n in records:
        append_metrics(run_dir, {"iteration": n, "loss": 1.0 / n})


def test_atomic_write_text_replaces_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "a: 1\n")
    atomic_write_text(path, "a: 2\n")
    assert path.read_text() == "a: 2\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_text_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]  # fails inside the write
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_json_is_sorted_and_indented(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2) + "\n"


def test_atomic_dir_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "iter_1"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("iter_1.tmp-")
        assert not target.exists()  # nothing visible until the body finishes
        (tmp / "model.bin").write_text("v1")
    assert (target / "model.bin").read_text() == "v1"

    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]
    assert leftovers(tmp_path) == []


def test_atomic_dir_failure_leaves_old_dir_intact(tmp_path: Path) -> None:
    target = tmp_path / "iter_1"
    with atomic_dir(target) as tmp:
        (tmp / "model.bin").write_text("good")

    with pytest.raises(RuntimeError, match="killed mid-save"):
        with atomic_dir(target) as tmp:
            (tmp / "model.bin").write_text("half")
            raise RuntimeError("killed mid-save")
    assert (target / "model.bin").read_text() == "good"
    assert leftovers(tmp_path) == []


def test_atomic_dir_failure_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "iter_1") as tmp:
            (tmp / "partial").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_metrics_round_trip(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) == []
    first = {"iteration": 1, "loss": 0.5, "eval": {"win_rate": 0.75}}
    second = {"iteration": 2, "loss": 0.25, "lengths": [3, 4]}
    append_metrics(tmp_path, first)
    append_metrics(tmp_path, second)
    assert read_metrics(tmp_path) == [first, second]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("record", "key"),
    [
        ({"iteration": 1, "loss": math.nan}, "'loss'"),
        ({"iteration": 1, "eval": {"win_rate": math.inf}}, "'eval.win_rate'"),
        ({"iteration": 1, "losses": [0.1, -math.inf]}, r"'losses\[1\]'"),
    ],
)
def test_non_finite_metrics_rejected(tmp_path: Path, record: dict, key: str) -> None:
    append_metrics(tmp_path, {"iteration": 0, "loss": 1.0})
    with pytest.raises(ValueError, match=key):
        append_metrics(tmp_path, record)
    assert read_metrics(tmp_path) == [{"iteration": 0, "loss": 1.0}]


def test_malformed_metrics_line_named(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n{"iteration": 2,\n')
    with pytest.raises(ValueError, match=r"line 2\): invalid JSON"):
        read_metrics(tmp_path)


def test_last_complete_iteration_empty_run(tmp_path: Path) -> None:
    assert last_complete_iteration(tmp_path) == 0


def test_checkpoint_without_metrics_line_is_incomplete(tmp_path: Path) -> None:
    make_iterations(tmp_path, dirs=range(1, 4), records=range(1, 3))
    assert last_complete_iteration(tmp_path) == 2


def test_metrics_line_without_checkpoint_is_incomplete(tmp_path: Path) -> None:
    make_iterations(tmp_path, dirs=range(1, 3), records=range(1, 4))
    assert last_complete_iteration(tmp_path) == 2


def test_all_complete(tmp_path: Path) -> None:
    make_iterations(tmp_path, dirs=range(1, 4), records=range(1, 4))
    assert last_complete_iteration(tmp_path) == 3


def test_non_contiguous_records_rejected(tmp_path: Path) -> None:
    make_iterations(tmp_path, dirs=range(1, 4), records=range(1, 2))
    append_metrics(tmp_path, {"iteration": 3})
    with pytest.raises(ValueError, match=r"record 2 has iteration 3, expected 2"):
        last_complete_iteration(tmp_path)


def test_clean_incomplete_removes_stale_state(tmp_path: Path) -> None:
    make_iterations(tmp_path, dirs=range(1, 4), records=range(1, 5))
    (tmp_path / "eval").mkdir()
    for n in range(1, 5):
        atomic_write_json(tmp_path / "eval" / f"iter_{n}.json", {"win_rate": 0.5})
    (tmp_path / "iter_5.tmp-dead").mkdir()
    (tmp_path / "metrics.jsonl.tmp-dead").write_text("{")
    (tmp_path / "eval" / "iter_5.json.tmp-dead").write_text("{")
    (tmp_path / "config.yaml").write_text("seed: 0\n")

    last = last_complete_iteration(tmp_path)
    assert last == 3
    removed = clean_incomplete(tmp_path, last)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "eval/iter_4.json",
        "eval/iter_5.json.tmp-dead",
        "iter_5.tmp-dead",
        "metrics.jsonl.tmp-dead",
    ]
    assert all(not p.exists() for p in removed)
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert all(iteration_dir(tmp_path, n).is_dir() for n in range(1, 4))
    assert (tmp_path / "config.yaml").exists()
    assert last_complete_iteration(tmp_path) == 3


def test_clean_incomplete_removes_checkpoints_past_last(tmp_path: Path) -> None:
    make_iterations(tmp_path, dirs=range(1, 4), records=range(1, 3))
    removed = clean_incomplete(tmp_path, last_complete_iteration(tmp_path))
    assert removed == [iteration_dir(tmp_path, 3)]
    assert not iteration_dir(tmp_path, 3).exists()
    assert iteration_dir(tmp_path, 2).is_dir()
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2]


def slow_build(tmp: Path, log: Path) -> None:
    """A build that takes a while and records each time it runs (by pid)."""
    import os
    import time

    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    (tmp / "made_by").write_text(str(os.getpid()))


def build_part(path: str, log: str, started) -> None:
    from selfplay.core.checkpoint import build_once

    started.set()
    build_once(Path(path), lambda tmp: slow_build(tmp, Path(log)))


def test_a_part_wanted_by_two_processes_at_once_is_built_once(tmp_path):
    """The second process waits on the lock and finds the part built; nothing is built twice or replaced."""
    import multiprocessing

    from selfplay.core.checkpoint import build_once

    ctx = multiprocessing.get_context("fork")
    part, log = tmp_path / "cache" / "part", tmp_path / "builds.log"
    started = ctx.Event()
    other = ctx.Process(target=build_part, args=(str(part), str(log), started))
    other.start()
    assert started.wait(10)
    while not log.exists():  # the other process holds the lock and is building
        time.sleep(0.01)
    build_once(part, lambda tmp: slow_build(tmp, log))
    other.join(10)
    assert other.exitcode == 0
    assert log.read_text().split() == [str(other.pid)]
    assert (part / "made_by").read_text() == str(other.pid)
    build_once(part, lambda tmp: slow_build(tmp, log))  # done: not built again
    assert log.read_text().split() == [str(other.pid)]
    assert sorted(p.name for p in part.parent.iterdir()) == [".part.lock", "part"]  # no temporary left
