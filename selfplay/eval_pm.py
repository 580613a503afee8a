"""Entry point: ``python -m selfplay.eval_pm [preset] key=value ...`` (see --help).

Scores preference pairs with a preference model of any kind and reports how
often it prefers the chosen response, overall and per subset (RewardBench-style):
load the pairs (the embedded world's held-out pairs where none are named), load
the scorer, compute the accuracy report, print it as a table, and write it as
JSON to ``out`` if set.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from selfplay.config.pm import EvalPMConfig, check_eval, command_help, resolve_device, run_cli, world_pairs_file
from selfplay.core.checkpoint import atomic_write_json
from selfplay.core.jsonl import DataError
from selfplay.core.lm import ModelLoadError
from selfplay.data.pairs import BadRow, PreferencePair, bad_rows_record, load_pairs, warn_bad_rows

log = logging.getLogger("selfplay.eval_pm")

MAIN_KEYS = ["scorer.kind", "scorer.model", "scorer.tokenizer", "scorer.k", "scorer.tau", "scorer.batch_size",
             "scorer.device", "data.path", "data.split", "data.subset_column", "data.max_bad_share", "out"]
USAGE = command_help(
    "selfplay.eval_pm",
    "Reports a preference model's pair accuracy (share of pairs where it prefers chosen), overall and per\n"
    "subset. scorer.model is required; without data.path it scores the embedded world's held-out pairs.\n"
    "scorer.kind=multi_objective is refused (no pair accuracy without a direction over its attributes):\n"
    "its per-attribute MSE and correlation are in the eval_report.json of selfplay.train_pm.",
    EvalPMConfig,
    MAIN_KEYS,
)


def format_report(report: dict[str, Any]) -> str:
    """An ``accuracy_report`` as a small table: one line per subset, then the overall accuracy."""
    rows = [(name, sub["accuracy"], sub["pairs"]) for name, sub in report.get("subsets", {}).items()]
    rows.append(("overall", report["accuracy"], report["pairs"]))
    width = max(len("subset"), *(len(name) for name, _, _ in rows))
    lines = [f"  {'subset':<{width}}  accuracy  pairs"]
    lines += [f"  {name:<{width}}  {acc:8.3f}  {n:5d}" for name, acc, n in rows]
    return "\n".join(lines)


def load_pairs_logged(source: str, split: str, d: DictConfig) -> tuple[list[PreferencePair], list[BadRow]]:
    """``load_pairs`` with the ``data.subset_column`` / ``data.max_bad_share`` of ``d``, warning of bad rows."""
    pairs, bad = load_pairs(source, split, d.subset_column, d.max_bad_share)
    warn_bad_rows(log, source, len(pairs), bad)
    return pairs, bad


def run(cfg: DictConfig) -> None:
    """Load the pairs and the scorer, print the accuracy table, and write the report to ``out`` if set."""
    from selfplay.core.lm import ModelTrust
    from selfplay.models.preference_scorer import load_scorer
    from selfplay.models.training import accuracy_report

    d, s = cfg.data, cfg.scorer
    path = d.path or world_pairs_file(cfg.world, "test.jsonl")
    pairs, bad = load_pairs_logged(path, d.split, d)
    device = resolve_device(s.device)
    scorer = load_scorer(s.kind, s.model, s.batch_size, k=s.k, tau=s.tau, tokenizer=s.tokenizer, device=device,
                         trust=ModelTrust.of(s), dtype=s.dtype)
    report = accuracy_report(scorer.model, scorer.tokenizer, pairs, s.batch_size)
    print(f"{s.kind} model {s.model} on {path}:\n{format_report(report)}")
    if cfg.out is not None:
        report.update(kind=s.kind, model=s.model, data=path, split=d.split, bad_rows=bad_rows_record(bad))
        atomic_write_json(Path(cfg.out).expanduser(), report)
        print(f"report: {cfg.out}")


def main(argv: list[str] | None = None) -> int:
    """``python -m selfplay.eval_pm``: 0 on success, 2 on a config, data or model problem."""
    return run_cli(argv, EvalPMConfig, check_eval, USAGE, run, (DataError, ModelLoadError))


if __name__ == "__main__":
    sys.exit(main())
