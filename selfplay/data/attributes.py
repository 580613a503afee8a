"""Attribute-labelled rows: what the multi-objective reward model trains on (docs/methods.md §2.3, [DPA] sec. 2.1).

HelpSteer-style rows load from any source ``selfplay.data.load_rows`` reads: a prompt, a response and
one column per attribute, each a number or missing::

    {"prompt": "Tell me about apples.", "response": "red sweet orchard", "helpfulness": 3, "verbosity": null}

- the prompt is a string (one user turn) or a list of chat messages ending with the user's turn, as
  in the pair loader (``selfplay.data.pairs``); the response is a string, or messages ending with the
  assistant's (any earlier ones must repeat the prompt);
- a missing column, null or NaN is a missing label: ``None``, masked out of the loss, not zero;
- the attributes are named, or inferred from the first row: its numeric (or null) columns other than
  the prompt and response, in column order.

A malformed row (no prompt or response, a label that is not a finite number, or no label at all) does
not stop loading: it is a ``BadRow`` naming the row and column, and loading fails only when bad rows
exceed ``max_bad_share`` of the source, as for pairs.  Seed 003 rescales every attribute to 0-100
(``rescale``: HelpSteer's 0-4 becomes x25) before training.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfplay.core.checkpoint import atomic_write_text
from selfplay.core.jsonl import DataError
from selfplay.data.pairs import BadRow, check_bad_share, describe_bad_rows
from selfplay.data.prompts import load_rows, parse_turns

Messages = list[dict[str, str]]


SCALE = 100.0  # every attribute is rescaled to [0, SCALE]


@dataclass(frozen=True)
class AttributeRow:
    prompt: Messages
    response: str
    labels: tuple[float | None, ...]  # one per attribute, in the attribute order; None: missing (masked)


def load_attribute_rows(
    source: str,
    split: str = "train",
    attributes: list[str] | None = None,
    prompt_column: str = "prompt",
    response_column: str = "response",
    max_bad_share: float = 0.05,
) -> tuple[list[AttributeRow], list[str], list[BadRow]]:
    """The attribute rows of ``source`` (file, directory or hub dataset), the attribute names, and the bad rows.

    ``attributes`` None infers them from the first row (module docstring).  Raises DataError if no
    attribute can be found, the share of bad rows exceeds ``max_bad_share`` (``data.max_bad_share``),
    or no row is usable.
    """
    raw = [row for _, row in load_rows(source, split)]
    if not raw:
        raise DataError(f"{source} has no rows")
    names = list(attributes) if attributes is not None else infer_attributes(source, raw[0], prompt_column,
                                                                             response_column)
    if not names:
        raise DataError(f"{source}: no attribute names given (data.attributes is an empty list)")
    rows, bad = [], []
    for i, row in enumerate(raw):
        try:
            rows.append(parse_attribute_row(row, names, prompt_column, response_column))
        except DataError as e:
            bad.append(BadRow(i, str(e)))
    check_bad_share(source, len(raw), bad, max_bad_share)
    if not rows:
        raise DataError(f"{source}: none of its {len(raw)} rows is a usable attribute row. {describe_bad_rows(bad)}")
    return rows, names, bad


def infer_attributes(source: str, first: dict[str, Any], prompt_column: str, response_column: str) -> list[str]:
    """The numeric (or null) columns of the first row but the prompt and response, in column order."""
    names = [c for c, v in first.items() if c not in (prompt_column, response_column) and (v is None or _is_number(v))]
    if not names:
        raise DataError(
            f"{source}: found no attribute columns (numeric or null) in the first row besides {prompt_column!r} and "
            f"{response_column!r}; its columns are {list(first)}. Name them with data.attributes"
        )
    return names


def parse_attribute_row(
    row: dict[str, Any], names: list[str], prompt_column: str = "prompt", response_column: str = "response"
) -> AttributeRow:
    """One row as an AttributeRow; DataError names the column at fault."""
    if not isinstance(row, dict):
        raise DataError(f"expected an object with {prompt_column!r}, {response_column!r} and attributes, "
                        f"got {type(row).__name__}")
    for column in (prompt_column, response_column):
        if column not in row:
            raise DataError(f"no column {column!r}; columns are {sorted(row)}")
    prompt = parse_turns("", row[prompt_column], prompt_column, last_role="user", label="prompt message")
    turns = parse_turns("", row[response_column], response_column, last_role="assistant",
                        label=f"{response_column} message")
    if turns[:-1] and turns[:-1] != prompt:
        raise DataError(f"column {response_column!r} has messages before its response that are not the prompt")
    labels = tuple(_label(row.get(name), name) for name in names)
    if all(x is None for x in labels):
        raise DataError(f"every attribute label is missing ({', '.join(names)})")
    return AttributeRow(prompt, turns[-1]["content"], labels)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _label(value: Any, column: str) -> float | None:
    """A label: None if missing (null or NaN), else a finite float; DataError otherwise."""
    if value is None:
        return None
    if not _is_number(value):
        raise DataError(f"column {column!r} must be a number or null, got {value!r}")
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise DataError(f"column {column!r} is infinite")
    return float(value)


def attribute_ranges(rows: list[AttributeRow], names: list[str]) -> dict[str, tuple[float, float]]:
    """Each attribute's observed (min, max) over ``rows``, in ``names`` order."""
    ranges = {}
    for a, name in enumerate(names):
        seen = [r.labels[a] for r in rows if r.labels[a] is not None]
        if not seen:
            raise DataError(f"attribute {name!r} has no observed label, so it has no range to rescale from")
        ranges[name] = (min(seen), max(seen))
    return ranges


def rescale(rows: list[AttributeRow], ranges: dict[str, tuple[float, float]]) -> list[AttributeRow]:
    """Map each attribute linearly from its (lo, hi) to 0-100 ([DPA] sec. 2.1); missing labels stay None.

    ``ranges`` holds one (lo, hi) per attribute, in the rows' attribute order.  A label outside
    (lo, hi), e.g. a held-out row beyond the training rows' range, maps outside 0-100: not clipped.
    """
    spans = list(ranges.items())
    for name, (lo, hi) in spans:
        if not hi > lo:
            raise DataError(f"attribute {name!r} has range ({lo}, {hi}): it cannot be rescaled to 0-{SCALE:g} "
                            "(every label is the same; drop the attribute or give data.attribute_ranges)")
    out = []
    for r in rows:
        if len(r.labels) != len(spans):
            raise ValueError(f"rows have {len(r.labels)} labels but {len(spans)} ranges were given")
        labels = tuple(None if x is None else (x - lo) / (hi - lo) * SCALE for x, (_, (lo, hi)) in zip(r.labels, spans))
        out.append(AttributeRow(r.prompt, r.response, labels))
    return out


def attribute_row(row: AttributeRow, names: list[str]) -> dict[str, Any]:
    """``row`` as a JSON object: the prompt a string when it is one user turn, else messages; null for missing."""
    single = len(row.prompt) == 1 and row.prompt[0]["role"] == "user"
    out: dict[str, Any] = {"prompt": row.prompt[0]["content"] if single else [dict(m) for m in row.prompt],
                           "response": row.response}
    out.update(zip(names, row.labels))
    return out


def write_attribute_jsonl(path: str | Path, rows: list[AttributeRow], names: list[str]) -> None:
    """Write ``rows`` as JSON lines (``attribute_row``), atomically; ``load_attribute_rows`` reads them back."""
    atomic_write_text(path, "".join(json.dumps(attribute_row(r, names), ensure_ascii=False) + "\n" for r in rows))
