"""JSON-lines reading shared by the data loaders and the run directory, and the error both raise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data source (prompts or preference pairs) that cannot be used: names the source and, for a bad row, the row."""


def read_jsonl(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """Yield ``(row label, object)`` for each non-blank line of a JSON-lines file.

    The label reads ``<path>: row R (line L)``; a line that is not a JSON object raises DataError.
    """
    row = 0
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}: row {row} (line {line_no})"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj
            row += 1
