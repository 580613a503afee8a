"""Atomic writes into the run directory, and finding where a killed run can resume.

Run directory layout::

    config.yaml
    metrics.jsonl        one JSON record per finished iteration, {"iteration": N, ...}
    iter_1/ iter_2/ ...  Hugging Face checkpoints, each written inside ``atomic_dir``
    eval/iter_N.json     evaluation results, written with ``atomic_write_json``

Every file and checkpoint directory is built under a temporary ``<name>.tmp-<random>``
name beside its destination and renamed into place only when complete, so a killed
run never leaves a half-written checkpoint or metrics line; at worst it leaves
``*.tmp-*`` leftovers, which ``clean_incomplete`` removes.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from selfplay.core.jsonl import read_jsonl

METRICS_FILE = "metrics.jsonl"


EVAL_DIR = "eval"


TMP_MARKER = ".tmp-"


_ITER_DIR = re.compile(r"iter_(\d+)")


_EVAL_FILE = re.compile(r"iter_(\d+)\.json")


def iteration_dir(run_dir: str | Path, n: int) -> Path:
    """The checkpoint directory of iteration ``n``."""
    return Path(run_dir) / f"iter_{n}"


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable across a power loss, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sibling_tmp(path: Path) -> Path:
    """A fresh temporary name beside ``path``; ``clean_incomplete`` recognises it as a leftover."""
    return path.parent / f"{path.name}{TMP_MARKER}{secrets.token_hex(8)}"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling_tmp(path)
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the body finishes.

    On a clean exit the temporary directory replaces ``path`` (an existing one is
    renamed aside, the new one renamed in, then the old one deleted).  If the body
    raises, the temporary directory is deleted and ``path`` is left untouched.
    """
    path = Path(path)
    tmp = _sibling_tmp(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = _sibling_tmp(path)
        path.rename(old)
    tmp.rename(path)
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old)


def build_once(path: Path, build: Callable[[Path], object], done: Callable[[], bool] | None = None) -> None:
    """``build(tmp)`` fills a temporary directory that becomes ``path`` (``atomic_dir``), unless it is there
    already (``done``, default: ``path`` exists).  Several processes that want one part at once (two runs
    started together, or the test suite's background build) build it once: the others wait on a lock beside it
    and find it done, instead of building it again and replacing it under a reader."""
    done = done or path.exists
    if done():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not done():
            with atomic_dir(path) as tmp:
                build(tmp)


def _check_finite(value: Any, key: str) -> None:
    """Raise ValueError naming ``key`` if ``value`` holds a NaN or infinite float at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"metrics value {key!r} is {value}; only finite numbers keep metrics.jsonl valid JSON")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def _write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    lines = [json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records]
    atomic_write_text(run_dir / METRICS_FILE, "".join(lines))


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` to ``metrics.jsonl`` by atomically rewriting the whole file."""
    if not isinstance(record, dict):
        raise TypeError(f"a metrics record must be a dict, got {type(record).__name__}")
    _check_finite(record, "")
    run_dir = Path(run_dir)
    _write_metrics(run_dir, [*read_metrics(run_dir), record])


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` in order; ``[]`` if the file does not exist."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [record for _, record in read_jsonl(path)]


def _check_contiguous(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Raise ValueError unless the records' iterations are exactly 1, 2, ..., len(records)."""
    for i, record in enumerate(records, start=1):
        n = record.get("iteration")
        if type(n) is not int or n != i:
            raise ValueError(
                f"{run_dir / METRICS_FILE}: record {i} has iteration {n!r}, expected {i}; "
                "records must number the iterations 1..N in order"
            )


def last_complete_iteration(run_dir: str | Path) -> int:
    """The largest N such that iterations 1..N all have a metrics record and an ``iter_N/`` directory.

    A run killed mid-iteration can leave a checkpoint without its metrics record
    (or, if a checkpoint was removed, the reverse); such an iteration is not
    complete.  Returns 0 if no iteration is complete.
    """
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    _check_contiguous(run_dir, records)
    last = 0
    while last < len(records) and iteration_dir(run_dir, last + 1).is_dir():
        last += 1
    return last


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def clean_incomplete(run_dir: str | Path, last: int) -> list[Path]:
    """Remove everything past iteration ``last`` so the run can resume at ``last + 1``.

    Deletes ``iter_M/`` for M > ``last``, ``eval/iter_M.json`` for M > ``last``,
    and leftover ``*.tmp-*`` entries in ``run_dir`` and ``eval/``; drops metrics
    records with iteration > ``last`` (rewriting ``metrics.jsonl`` atomically).
    Returns the removed paths.
    """
    if last < 0:
        raise ValueError(f"last must be >= 0, got {last}")
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    _check_contiguous(run_dir, records)

    stale = []
    for directory, pattern in ((run_dir, _ITER_DIR), (run_dir / EVAL_DIR, _EVAL_FILE)):
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            match = pattern.fullmatch(entry.name)
            if TMP_MARKER in entry.name or (match and int(match.group(1)) > last):
                stale.append(entry)
    for entry in stale:
        _remove(entry)

    if len(records) > last:
        _write_metrics(run_dir, records[:last])
    return stale
