"""Prompt loading, validation and the per-iteration prompt schedule.

Every prompt is normalised to a list of chat messages ending with a user turn, so
the rest of the pipeline never deals with raw strings or half-valid rows.  Errors
name the source and the 0-based row index (plus the line number for ``.jsonl``),
so a bad row in a large file can be found directly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfplay.core.jsonl import DataError, read_jsonl

Messages = list[dict[str, str]]


ROLES = ("system", "user", "assistant")


DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


def load_prompts(source: str, column: str = "prompt", split: str = "train") -> list[Messages]:
    """Load and validate the prompts in ``source`` (any source ``load_rows`` reads).

    Each row's ``column`` holds either a non-empty string (one user turn) or a list
    of chat messages whose last turn is the user's.
    """
    return _parse_rows(source, load_rows(source, split), column)


def load_responses(source: str, prompt_column: str = "prompt", response_column: str = "response",
                   split: str = "train") -> list[tuple[Messages, str]]:
    """(prompt, response) rows, e.g. an SFT set for memory replay; a row without a non-empty string
    response raises DataError naming it."""
    out = []
    for where, row in load_rows(source, split):
        prompt = _parse_prompt(where, row, prompt_column)
        response = row.get(response_column)
        if not isinstance(response, str) or not response.strip():
            raise DataError(f"{where}: column {response_column!r} must be a non-empty string, got {response!r}")
        out.append((prompt, response))
    if not out:
        raise DataError(f"{source} has no (prompt, response) rows")
    return out


def load_rows(source: str, split: str = "train") -> list[tuple[str, dict[str, Any]]]:
    """The rows of ``source`` in source order, as ``(row label, object)``; the label names source and row.

    ``source`` is a local ``.jsonl``, ``.json`` (a JSON list of objects) or
    ``.parquet`` file, a local directory of such files, or else a Hugging Face hub
    dataset name.  ``split`` selects the split of a directory or hub dataset; a
    single file is one split.
    """
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return list(read_jsonl(path))
        if suffix == ".json":
            return _read_json_list(path)
        if suffix == ".parquet":
            return _load_with_datasets(source, "parquet", data_files=str(path), split="train")
        raise DataError(f"{source}: unsupported file type {suffix!r}; expected one of {', '.join(DATA_SUFFIXES)}")
    if path.is_dir():
        return _load_with_datasets(source, str(path), split=split)
    return _load_from_hub(source, split)


def _read_json_list(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Read a ``.json`` file holding a list of objects as ``(row label, object)`` pairs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    rows = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: row {i}: expected a JSON object, got {type(obj).__name__}")
        rows.append((f"{path}: row {i}", obj))
    return rows


def _load_with_datasets(source: str, *args: Any, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    """Load local data with ``datasets.load_dataset``, turning its failures into DataError."""
    import datasets

    try:
        dataset = datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # datasets raises many unrelated types for unreadable data
        raise DataError(f"{source}: could not load data: {_brief(e)}") from e
    return [(f"{source}: row {i}", row) for i, row in enumerate(dataset)]


def _load_from_hub(source: str, split: str) -> list[tuple[str, dict[str, Any]]]:
    """Load split ``split`` of the hub dataset ``source``."""
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as e:
        raise DataError(
            f"{source}: neither an existing local file/directory nor loadable from the Hugging Face hub "
            f"(split {split!r}): {_brief(e)}"
        ) from e
    return [(f"{source}: row {i}", row) for i, row in enumerate(dataset)]


def _brief(error: Exception, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_rows(source: str, rows: Iterable[tuple[str, dict[str, Any]]], column: str) -> list[Messages]:
    prompts = [_parse_prompt(where, row, column) for where, row in rows]
    if not prompts:
        raise DataError(f"{source} has no prompt rows")
    return prompts


def _parse_prompt(where: str, row: dict[str, Any], column: str) -> Messages:
    """Normalise one row's prompt to chat messages, or raise DataError naming the row."""
    if column not in row:
        raise DataError(f"{where}: no column {column!r}; columns are {sorted(row)}")
    return parse_turns(where, row[column], column, last_role="user")


def _at(where: str, detail: str) -> str:
    """``where: detail``, or ``detail`` alone when there is no ``where``."""
    return f"{where}: {detail}" if where else detail


def parse_turns(where: str, value: Any, column: str, last_role: str, label: str = "message") -> Messages:
    """Normalise the value of ``column`` to chat messages whose last turn is ``last_role``'s.

    A non-empty string is one ``last_role`` turn; a list must hold valid chat
    messages (each normalised to role/content).  Raises DataError prefixed with
    ``where`` (if any), naming each message as ``<label> <index>``.
    """
    if value is None:
        raise DataError(_at(where, f"column {column!r} is null"))
    if isinstance(value, str):
        if not value.strip():
            raise DataError(_at(where, f"column {column!r} is an empty string"))
        return [{"role": last_role, "content": value}]
    if not isinstance(value, list):
        raise DataError(_at(
            where, f"column {column!r} must be a string or a list of chat messages, got {type(value).__name__}"
        ))
    if not value:
        raise DataError(_at(where, f"column {column!r} is an empty message list"))
    messages = [_parse_message(_at(where, f"{label} {j}"), m) for j, m in enumerate(value)]
    if messages[-1]["role"] != last_role:
        raise DataError(_at(where, f"the last {label} must have role {last_role!r}, got {messages[-1]['role']!r}"))
    return messages


def _parse_message(where: str, message: Any) -> dict[str, str]:
    if not isinstance(message, dict):
        raise DataError(f"{where}: expected a dict with 'role' and 'content', got {type(message).__name__}")
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise DataError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(content, str) or not content.strip():
        raise DataError(f"{where}: content must be a non-empty string, got {content!r}")
    # Keep only role/content: parquet fills keys absent from some messages with None.
    return {"role": role, "content": content}


def add_system_prompt(prompts: list[Messages], system: str | None) -> list[Messages]:
    """Return copies of ``prompts`` with ``system`` prepended to those lacking a system message."""
    if system is None:
        return [list(p) for p in prompts]
    return [list(p) if p and p[0]["role"] == "system" else [{"role": "system", "content": system}, *p] for p in prompts]


def split_prompts(prompts: list[Messages], eval_size: int, seed: int) -> tuple[list[Messages], list[Messages]]:
    """Shuffle deterministically with ``seed`` and hold out the last ``eval_size`` as ``(train, eval)``."""
    if eval_size < 0:
        raise DataError(f"eval_size must be >= 0, got {eval_size}")
    if len(prompts) < eval_size + 1:
        raise DataError(
            f"need at least eval_size + 1 = {eval_size + 1} prompts to hold out {eval_size} for evaluation, "
            f"got {len(prompts)}"
        )
    shuffled = list(prompts)
    random.Random(seed).shuffle(shuffled)
    cut = len(shuffled) - eval_size
    return shuffled[:cut], shuffled[cut:]


def iteration_prompts(train: list, iteration: int, per_iter: int, subsets: int | None = None) -> list:
    """The prompts for 1-based ``iteration``: consecutive disjoint chunks of ``train``.

    Iteration t takes the ``per_iter`` prompts starting at position
    ``(t - 1) * per_iter``, wrapping cyclically past the end of ``train``.  So
    successive iterations use disjoint prompt subsets while ``train`` lasts, and
    then cycle through it again; iteration t+1 shares no prompt with iteration t
    unless ``per_iter > len(train) / 2``.  With ``per_iter >= len(train)`` every
    iteration uses all of ``train``.

    With ``subsets = N``, ``train`` is first cut into N disjoint contiguous parts
    (sizes differ by at most one) and iteration t draws, as above, from part
    (t - 1) mod N on that part's own ((t - 1) // N + 1)-th visit: [DPA]'s two
    halves D1, D2 that alternate (N = 2), so the policy that samples iteration
    t + 1 has never trained on its prompts.
    """
    if iteration < 1:
        raise ValueError(f"iteration is 1-based, got {iteration}")
    if per_iter < 1:
        raise ValueError(f"per_iter must be >= 1, got {per_iter}")
    if not train:
        raise DataError("no training prompts")
    if subsets is not None:
        if not 1 <= subsets <= len(train):
            raise DataError(f"data.subsets={subsets} needs between 1 and {len(train)} (the training prompts) parts")
        part = (iteration - 1) % subsets
        bounds = [len(train) * i // subsets for i in range(subsets + 1)]
        return iteration_prompts(train[bounds[part]:bounds[part + 1]], (iteration - 1) // subsets + 1, per_iter)
    n = len(train)
    if per_iter >= n:
        return list(train)
    start = (iteration - 1) * per_iter % n
    return [train[(start + i) % n] for i in range(per_iter)]
