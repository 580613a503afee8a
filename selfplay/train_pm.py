"""Entry point: ``python -m selfplay.train_pm [preset] key=value ...`` (see --help).

Trains a preference model (GPM, Bradley-Terry reward model or pairwise baseline)
on (prompt, chosen, rejected) pairs.  A recipe that reads top to bottom: resolve
the config and the sources (the embedded world's where none is named), load and
split the pairs, load the backbone, train, evaluate, and write ``out`` in one
atomic step: the checkpoint (loadable with ``selfplay.scoring.load_scorer``),
``train_config.yaml`` and ``eval_report.json``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from selfplay.checkpoint import atomic_dir, atomic_write_json, atomic_write_text
from selfplay.config import to_yaml
from selfplay.data import DataError
from selfplay.eval_pm import format_report, load_pairs_logged
from selfplay.modeling import ModelLoadError
from selfplay.pairs import BadRow, PreferencePair, bad_rows_record, split_pairs
from selfplay.pm_config import (
    TrainPMConfig,
    check_train,
    help_text,
    resolve_device,
    run_cli,
    world_pairs_file,
)

log = logging.getLogger("selfplay.train_pm")

MAIN_KEYS = ["kind", "model", "tokenizer", "k", "gate", "tau", "data.path", "data.split", "data.eval_path",
             "data.eval_share", "data.subset_column", "data.max_bad_share", "train.steps", "train.epochs",
             "train.batch_size", "train.lr", "train.seed", "train.device", "out"]
USAGE = help_text(
    "selfplay.train_pm",
    "Trains a preference model (kind=gpm|bt|pairwise) from a causal-LM backbone on prompt/chosen/rejected\n"
    "pairs and writes OUT/: the checkpoint, train_config.yaml and eval_report.json. Without model /\n"
    "data.path it uses the embedded world's SFT policy / labelled pairs (built once and cached).",
    TrainPMConfig,
    MAIN_KEYS,
)


class OutExistsError(RuntimeError):
    """``out`` already holds something: train_pm never overwrites."""


@dataclass
class PairSplits:
    """The pairs to train on, the held-out pairs, and the bad rows of each source read."""

    train: list[PreferencePair]
    held_out: list[PreferencePair]
    bad: dict[str, list[BadRow]]  # "train" / "eval" -> the bad rows of that source


def check_out(out: str) -> Path:
    """The absolute ``out`` directory; refused if it exists and is not an empty directory."""
    path = Path(out).expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutExistsError(f"out '{path}' already exists and is not an empty directory; choose another out= "
                             "(train_pm never overwrites)")
    return path


def resolve_sources(cfg: DictConfig) -> None:
    """Fill model, tokenizer and data paths, from the embedded world where none is named."""
    if cfg.model is None:
        from selfplay.world.build import get_world

        cfg.model = get_world(cfg.world).policy
    cfg.tokenizer = cfg.tokenizer or cfg.model
    if cfg.data.path is None:
        cfg.data.path = world_pairs_file(cfg.world, "train.jsonl")
        cfg.data.eval_path = cfg.data.eval_path or world_pairs_file(cfg.world, "test.jsonl")


def load_splits(cfg: DictConfig) -> PairSplits:
    """The training and held-out pairs: ``data.eval_path`` if named, else ``data.eval_share`` of ``data.path``."""
    d = cfg.data
    pairs, bad = load_pairs_logged(d.path, d.split, d)
    if d.eval_path is None:
        train, held_out = split_pairs(pairs, d.eval_share, cfg.train.seed)
        return PairSplits(train, held_out, {"train": bad})
    held_out, eval_bad = load_pairs_logged(d.eval_path, d.eval_split, d)
    return PairSplits(pairs, held_out, {"train": bad, "eval": eval_bad})


def train_steps(cfg: DictConfig, n_train: int) -> int:
    """``train.steps``, or enough steps for ``train.epochs`` passes over the training pairs."""
    t = cfg.train
    return t.steps if t.steps is not None else max(1, math.ceil(t.epochs * n_train / t.batch_size))


def train(cfg: DictConfig, splits: PairSplits) -> tuple[Any, Any, dict[str, Any]]:
    """Build and train the model; returns it, its tokenizer and the report (without the held-out part)."""
    import torch

    from selfplay.modeling import load_tokenizer
    from selfplay.models.backbone import load_backbone
    from selfplay.models.kinds import new_preference_model
    from selfplay.preference_training import train_preference_model

    device = resolve_device(cfg.train.device)
    tokenizer = load_tokenizer(cfg.tokenizer)
    backbone = load_backbone(cfg.model)
    torch.manual_seed(cfg.train.seed)  # the heads' initialisation
    model = new_preference_model(cfg.kind, backbone, k=cfg.k, gate=cfg.gate, tau=cfg.tau).to(device)
    steps = train_steps(cfg, len(splits.train))
    log.info("training a %s model from %s on %d pairs for %d steps (%s)", cfg.kind, cfg.model, len(splits.train),
             steps, device)
    t0 = time.perf_counter()
    losses = train_preference_model(model, tokenizer, splits.train, steps, cfg.train.batch_size, cfg.train.lr,
                                    cfg.train.seed)
    report = {
        "kind": cfg.kind, "backbone": cfg.model, "tokenizer": cfg.tokenizer, "device": device,
        "data": {"train": cfg.data.path, "eval": cfg.data.eval_path or f"{cfg.data.eval_share} of train"},
        "n_train": len(splits.train), "n_eval": len(splits.held_out),
        "bad_rows": {source: bad_rows_record(bad) for source, bad in splits.bad.items()},
        "steps": steps, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
        "seconds": time.perf_counter() - t0, "loss_first": losses[0], "loss_last": losses[-1],
    }
    return model, tokenizer, report


def evaluate(model: Any, tokenizer: Any, splits: PairSplits, batch_size: int) -> dict[str, Any]:
    """Accuracy on the training pairs and, if any, the held-out pairs (overall and per subset)."""
    from selfplay.preference_training import accuracy_report

    out = {"train": accuracy_report(model, tokenizer, splits.train, batch_size)}
    out["held_out"] = accuracy_report(model, tokenizer, splits.held_out, batch_size) if splits.held_out else None
    return out


def write_out(out: Path, cfg: DictConfig, model: Any, tokenizer: Any, report: dict[str, Any]) -> None:
    """Checkpoint, train_config.yaml and eval_report.json into ``out``, all or nothing."""
    check_out(str(out))  # again: something may have appeared there while training
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / "train_config.yaml", to_yaml(cfg))
        atomic_write_json(tmp / "eval_report.json", report)


def summary(report: dict[str, Any], out: Path) -> str:
    """The lines printed at the end: where the model is, how training went, and the held-out accuracy table."""
    trained = (f"{report['kind']} model in {out} ({report['steps']} steps, {report['seconds']:.0f}s, "
               f"loss {report['loss_first']:.3f} -> {report['loss_last']:.3f})")
    lines = [trained, f"train accuracy {report['train']['accuracy']:.3f} on {report['train']['pairs']} pairs"]
    if report["held_out"] is not None:
        lines += ["held-out accuracy:", format_report(report["held_out"])]
    return "\n".join(lines)


def run(cfg: DictConfig) -> None:
    """The whole recipe; raises DataError, ModelLoadError or OutExistsError before writing anything."""
    out = check_out(cfg.out)
    resolve_sources(cfg)
    splits = load_splits(cfg)
    model, tokenizer, report = train(cfg, splits)
    report.update(evaluate(model, tokenizer, splits, cfg.train.batch_size))
    cfg.out = str(out)
    write_out(out, cfg, model, tokenizer, report)
    print(summary(report, out))


def main(argv: list[str] | None = None) -> int:
    """``python -m selfplay.train_pm``: 0 on success, 2 on a config, data, model or ``out`` problem."""
    return run_cli(argv, TrainPMConfig, check_train, USAGE, run, (DataError, ModelLoadError, OutExistsError))


if __name__ == "__main__":
    sys.exit(main())
