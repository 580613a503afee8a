"""Preference pairs: (prompt, chosen, rejected), the data every preference model trains on.

Pairs load from any source ``selfplay.data.load_rows`` reads, in TRL's
preference-data conventions (columns ``prompt``, ``chosen``, ``rejected``):

- standard: all three are strings;
- conversational: ``prompt`` is a list of chat messages ending with a user turn,
  ``chosen`` / ``rejected`` are message lists ending with the assistant's response
  (usually that one message; any earlier messages must repeat the prompt);
- implicit prompt: no ``prompt`` column, ``chosen`` / ``rejected`` are whole
  conversations that share every turn but the final assistant response; the
  shared turns are the prompt.

The prompt is normalised to chat messages and each response to its text.  A
malformed row does not stop loading: it is reported as a ``BadRow`` (0-based
index in source order, reason), and only when bad rows exceed a share of the
source does loading fail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfplay.core.checkpoint import atomic_write_text
from selfplay.core.jsonl import DataError
from selfplay.data.prompts import load_rows, parse_turns, split_prompts

Messages = list[dict[str, str]]


BAD_ROWS_SHOWN = 10  # bad rows listed in an error or warning


@dataclass
class PreferencePair:
    prompt: Messages
    chosen: str
    rejected: str
    subset: str | None = None  # e.g. a RewardBench-style category, for per-subset accuracy


@dataclass(frozen=True)
class BadRow:
    """A row that could not be used: its 0-based index in the source and why."""

    index: int
    reason: str


def load_pairs(
    source: str, split: str = "train", subset_column: str | None = "subset", max_bad_share: float = 0.05
) -> tuple[list[PreferencePair], list[BadRow]]:
    """Load the preference pairs of ``source`` (file, directory or hub dataset; see ``selfplay.data.load_rows``).

    Returns the good pairs and the bad rows.  Raises DataError if the share of bad
    rows exceeds ``max_bad_share`` (config key ``data.max_bad_share``) or no row is usable.
    """
    rows = [row for _, row in load_rows(source, split)]
    if not rows:
        raise DataError(f"{source} has no rows")
    pairs, bad = parse_pairs(rows, subset_column)
    check_bad_share(source, len(rows), bad, max_bad_share)
    if not pairs:
        raise DataError(f"{source}: none of its {len(rows)} rows is a usable preference pair. {describe_bad_rows(bad)}")
    return pairs, bad


def check_bad_share(source: str, n_rows: int, bad: list[BadRow], max_bad_share: float) -> None:
    """Refuse ``source`` when its share of malformed rows exceeds ``max_bad_share`` (``data.max_bad_share``)."""
    share = len(bad) / n_rows
    if share > max_bad_share:
        raise DataError(
            f"{source}: {len(bad)} of {n_rows} rows are malformed ({share:.1%}), more than the allowed "
            f"{max_bad_share:.1%}; fix the data or raise data.max_bad_share. {describe_bad_rows(bad)}"
        )


def warn_bad_rows(log: logging.Logger, source: str, n_good: int, bad: list[BadRow]) -> None:
    """Warn on ``log`` of the malformed rows a loader skipped (after ``check_bad_share`` let the source through)."""
    if bad:
        log.warning("%s: skipped %d malformed of %d rows. %s", source, len(bad), n_good + len(bad),
                    describe_bad_rows(bad))


def parse_pairs(
    rows: Iterable[dict[str, Any]], subset_column: str | None = "subset"
) -> tuple[list[PreferencePair], list[BadRow]]:
    """Parse every row with ``parse_pair``; the rows that fail become ``BadRow``s (index in ``rows``)."""
    pairs, bad = [], []
    for i, row in enumerate(rows):
        try:
            pairs.append(parse_pair(row, subset_column))
        except DataError as e:
            bad.append(BadRow(i, str(e)))
    return pairs, bad


def parse_pair(row: dict[str, Any], subset_column: str | None = "subset") -> PreferencePair:
    """One row in any of the TRL formats (module docstring) as a PreferencePair; DataError says what is wrong."""
    if not isinstance(row, dict):
        raise DataError(f"expected an object with prompt/chosen/rejected, got {type(row).__name__}")
    chosen = _turns(row, "chosen")
    rejected = _turns(row, "rejected")
    if "prompt" in row:
        prompt = parse_turns("", row["prompt"], "prompt", last_role="user", label="prompt message")
        for column, turns in (("chosen", chosen), ("rejected", rejected)):
            if turns[:-1] and turns[:-1] != prompt:
                raise DataError(f"column {column!r} has messages before its response that are not the prompt")
    else:
        prompt = _implicit_prompt(row, chosen, rejected)
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise DataError("chosen and rejected are identical")
    return PreferencePair(prompt, chosen[-1]["content"], rejected[-1]["content"], _subset(row, subset_column))


def _turns(row: dict[str, Any], column: str) -> Messages:
    """The messages of a response column, ending with the assistant's response."""
    if column not in row:
        raise DataError(f"no column {column!r}; columns are {sorted(row)}")
    return parse_turns("", row[column], column, last_role="assistant", label=f"{column} message")


def _implicit_prompt(row: dict[str, Any], chosen: Messages, rejected: Messages) -> Messages:
    """The prompt shared by two whole conversations (TRL's implicit-prompt format)."""
    if isinstance(row["chosen"], str) or isinstance(row["rejected"], str):
        raise DataError(
            f"no column 'prompt'; columns are {sorted(row)} (without one, chosen and rejected must be "
            "conversations that share the prompt turns)"
        )
    prompt = chosen[:-1]
    if prompt != rejected[:-1]:
        raise DataError("no column 'prompt', and chosen and rejected differ before their final assistant messages, "
                        "so they share no prompt")
    if not prompt:
        raise DataError("no column 'prompt', and chosen and rejected hold no prompt turns before their responses")
    if prompt[-1]["role"] != "user":
        raise DataError(
            f"the prompt shared by chosen and rejected must end with a user turn, got {prompt[-1]['role']!r}"
        )
    return prompt


def _subset(row: dict[str, Any], subset_column: str | None) -> str | None:
    value = row.get(subset_column) if subset_column else None
    return value if isinstance(value, str) and value.strip() else None


def describe_bad_rows(bad: list[BadRow], limit: int = BAD_ROWS_SHOWN) -> str:
    """``"Bad rows: row I: reason; ..."`` for the first ``limit`` bad rows, then how many more."""
    if not bad:
        return "No bad rows."
    shown = "; ".join(f"row {b.index}: {b.reason}" for b in bad[:limit])
    more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"Bad rows: {shown}{more}."


def bad_rows_record(bad: list[BadRow], limit: int = 100) -> dict[str, Any]:
    """A JSON-ready summary of ``bad``: the count and the first ``limit`` rows as {index, reason}."""
    return {"count": len(bad), "rows": [{"index": b.index, "reason": b.reason} for b in bad[:limit]]}


def split_pairs(
    pairs: list[PreferencePair], eval_share: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Shuffle with ``seed`` and hold out ``round(eval_share * n)`` pairs (at least one if ``eval_share > 0``).

    Returns ``(train, held_out)``; raises DataError if no training pair would be left.
    """
    if not 0 <= eval_share < 1:
        raise DataError(f"eval_share must be in [0, 1), got {eval_share}")
    n_eval = max(round(eval_share * len(pairs)), 1 if eval_share > 0 else 0)
    if n_eval >= len(pairs):
        raise DataError(
            f"holding out {n_eval} of {len(pairs)} pairs (eval_share={eval_share}) leaves no training pairs; "
            "lower data.eval_share or name a separate data.eval_path"
        )
    return split_prompts(pairs, n_eval, seed)


def pair_row(pair: PreferencePair) -> dict[str, Any]:
    """``pair`` as a TRL row: standard (strings) when the prompt is one user turn, else conversational."""
    if len(pair.prompt) == 1 and pair.prompt[0]["role"] == "user":
        row: dict[str, Any] = {"prompt": pair.prompt[0]["content"], "chosen": pair.chosen, "rejected": pair.rejected}
    else:
        row = {
            "prompt": [dict(m) for m in pair.prompt],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    if pair.subset is not None:
        row["subset"] = pair.subset
    return row


def write_pairs_jsonl(path: str | Path, pairs: list[PreferencePair]) -> None:
    """Write ``pairs`` as TRL JSON lines (``pair_row``), atomically; ``load_pairs`` reads them back unchanged."""
    atomic_write_text(path, "".join(json.dumps(pair_row(p), ensure_ascii=False) + "\n" for p in pairs))
