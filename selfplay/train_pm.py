"""Entry point: ``python -m selfplay.train_pm [preset] key=value ...`` (see --help).

Trains a preference model (GPM, Bradley-Terry reward model or pairwise baseline)
on (prompt, chosen, rejected) pairs, or a multi-objective reward model on
attribute-labelled rows (``kind=multi_objective``, docs/methods.md §2.3).  A recipe that
reads top to bottom: resolve the config and the sources (the embedded world's
where none is named), load and split the data, load the backbone, train,
evaluate, and write ``out`` in one atomic step: the checkpoint (loadable with
``selfplay.models.preference_scorer.load_scorer``), ``train_config.yaml`` and ``eval_report.json``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from selfplay.config.loading import to_yaml
from selfplay.config.pm import (
    TrainPMConfig,
    check_train,
    command_help,
    resolve_device,
    run_cli,
    world_attribute_file,
    world_pairs_file,
)
from selfplay.core.checkpoint import atomic_dir, atomic_write_json, atomic_write_text
from selfplay.core.jsonl import DataError
from selfplay.core.lm import ModelLoadError
from selfplay.data.attributes import AttributeRow
from selfplay.data.pairs import BadRow, PreferencePair, bad_rows_record, split_pairs, warn_bad_rows
from selfplay.eval_pm import format_report, load_pairs_logged

log = logging.getLogger("selfplay.train_pm")

MAIN_KEYS = ["kind", "model", "tokenizer", "k", "gate", "tau", "data.path", "data.split", "data.eval_path",
             "data.eval_share", "data.subset_column", "data.max_bad_share", "data.attributes",
             "data.attribute_ranges", "data.prompt_column", "data.response_column", "train.steps", "train.epochs",
             "train.batch_size", "train.lr", "train.seed", "train.device", "out"]
USAGE = command_help(
    "selfplay.train_pm",
    "Trains a preference model (kind=gpm|bt|pairwise) from a causal-LM backbone on prompt/chosen/rejected\n"
    "pairs, or a multi-objective reward model (kind=multi_objective) on rows of a prompt, a response and one\n"
    "numeric column per attribute (rescaled to 0-100), and writes OUT/: the checkpoint, train_config.yaml\n"
    "and eval_report.json (pair accuracy, or per-attribute MSE and correlation). Without model / data.path\n"
    "it uses the embedded world's SFT policy / labelled pairs or attribute rows (built once and cached).",
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


@dataclass
class AttributeSplits:
    """Attribute rows to train on and held out, rescaled to 0-100; the attributes, their ranges and the bad rows."""

    train: list[AttributeRow]
    held_out: list[AttributeRow]
    attributes: list[str]
    ranges: dict[str, tuple[float, float]]  # attribute -> the (lo, hi) mapped to 0-100
    bad: dict[str, list[BadRow]]


def check_out(out: str) -> Path:
    """The absolute ``out`` directory; refused if it exists and is not an empty directory."""
    path = Path(out).expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutExistsError(f"out '{path}' already exists and is not an empty directory; choose another out= "
                             "(train_pm never overwrites)")
    return path


def resolve_sources(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with the model, tokenizer and data paths filled in, from the embedded world where none
    is named (``cfg`` itself is left as validated); the copy is what ``train_config.yaml`` records."""
    model, d = cfg.model, cfg.data
    if model is None:
        from selfplay.world.build import get_world

        model = get_world(cfg.world).policy
    data = {}
    if d.path is None and cfg.kind == "multi_objective":
        from selfplay.world.oracle import ATTRIBUTES

        data = {"path": world_attribute_file(cfg.world, "train.jsonl"),
                "eval_path": d.eval_path or world_attribute_file(cfg.world, "test.jsonl"),
                # the world's labels are on 0-100 already: kept there, not stretched to the rows' min/max
                "attribute_ranges": d.attribute_ranges or {name: [0, 100] for name in d.attributes or ATTRIBUTES}}
    elif d.path is None:
        data = {"path": world_pairs_file(cfg.world, "train.jsonl"),
                "eval_path": d.eval_path or world_pairs_file(cfg.world, "test.jsonl")}
    return OmegaConf.merge(cfg, {"model": model, "tokenizer": cfg.tokenizer or model, "data": data})


def load_splits(cfg: DictConfig) -> PairSplits:
    """The training and held-out pairs: ``data.eval_path`` if named, else ``data.eval_share`` of ``data.path``."""
    d = cfg.data
    pairs, bad = load_pairs_logged(d.path, d.split, d)
    if d.eval_path is None:
        train, held_out = split_pairs(pairs, d.eval_share, cfg.train.seed)
        return PairSplits(train, held_out, {"train": bad})
    held_out, eval_bad = load_pairs_logged(d.eval_path, d.eval_split, d)
    return PairSplits(pairs, held_out, {"train": bad, "eval": eval_bad})


def load_attribute_splits(cfg: DictConfig) -> AttributeSplits:
    """Attribute rows as ``load_splits`` splits pairs, each attribute rescaled to 0-100 from its range over the
    training rows (or ``data.attribute_ranges``); the held-out source is read with the training attributes."""
    from selfplay.data.attributes import attribute_ranges, rescale

    d = cfg.data
    rows, names, bad = load_attribute_rows_logged(d.path, d.split, d, d.attributes)
    if d.eval_path is None:
        train_rows, held_out = split_pairs(rows, d.eval_share, cfg.train.seed)
        bad_rows = {"train": bad}
    else:
        held_out, _, eval_bad = load_attribute_rows_logged(d.eval_path, d.eval_split, d, names)
        train_rows, bad_rows = rows, {"train": bad, "eval": eval_bad}
    given = dict(d.attribute_ranges or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise DataError(f"data.attribute_ranges names {unknown}, not attributes of {d.path} (attributes: {names})")
    observed = attribute_ranges(train_rows, names) if set(names) - set(given) else {}
    ranges = {name: (float(given[name][0]), float(given[name][1])) if name in given else observed[name]
              for name in names}
    return AttributeSplits(rescale(train_rows, ranges), rescale(held_out, ranges), names, ranges, bad_rows)


def load_attribute_rows_logged(
    source: str, split: str, d: DictConfig, attributes: list[str] | None
) -> tuple[list[AttributeRow], list[str], list[BadRow]]:
    """``load_attribute_rows`` with the columns and ``max_bad_share`` of ``d``, warning of bad rows."""
    from selfplay.data.attributes import load_attribute_rows

    rows, names, bad = load_attribute_rows(source, split, None if attributes is None else list(attributes),
                                           d.prompt_column, d.response_column, d.max_bad_share)
    warn_bad_rows(log, source, len(rows), bad)
    return rows, names, bad


def train_steps(cfg: DictConfig, n_train: int) -> int:
    """``train.steps``, or enough steps for ``train.epochs`` passes over the training rows."""
    t = cfg.train
    return t.steps if t.steps is not None else max(1, math.ceil(t.epochs * n_train / t.batch_size))


def train(cfg: DictConfig, splits: PairSplits | AttributeSplits) -> tuple[Any, Any, dict[str, Any]]:
    """Build and train the model: a pair model on pairs, the multi-objective model (its head started at the
    labels' probe) on attribute rows; returns it, its tokenizer and the report (without the held-out part)."""
    import torch

    from selfplay.core.lm import load_tokenizer
    from selfplay.models.backbone import load_backbone
    from selfplay.models.kinds import new_preference_model
    from selfplay.models.training import init_gpm_head, train_attribute_model, train_preference_model

    attributes = splits.attributes if isinstance(splits, AttributeSplits) else None
    device = resolve_device(cfg.train.device)
    tokenizer = load_tokenizer(cfg.tokenizer)
    backbone = load_backbone(cfg.model)
    torch.manual_seed(cfg.train.seed)  # the heads' initialisation
    model = new_preference_model(cfg.kind, backbone, k=cfg.k, gate=cfg.gate, tau=cfg.tau,
                                 attributes=attributes).to(device)
    if cfg.kind == "gpm" and cfg.head_init == "difference":
        init_gpm_head(model, tokenizer, splits.train, cfg.train.batch_size, cfg.train.seed)
    fit = train_preference_model if attributes is None else train_attribute_model
    steps = train_steps(cfg, len(splits.train))
    log.info("training a %s model from %s on %d %s for %d steps (%s)", cfg.kind, cfg.model, len(splits.train),
             "pairs" if attributes is None else f"rows ({', '.join(attributes)})", steps, device)
    t0 = time.perf_counter()
    losses = fit(model, tokenizer, splits.train, steps, cfg.train.batch_size, cfg.train.lr, cfg.train.seed,
                 cfg.train.warmup_ratio, cfg.train.lr_schedule)
    report = {
        "kind": cfg.kind, "backbone": cfg.model, "tokenizer": cfg.tokenizer, "device": device,
        "data": {"train": cfg.data.path, "eval": cfg.data.eval_path or f"{cfg.data.eval_share} of train"},
        "n_train": len(splits.train), "n_eval": len(splits.held_out),
        "bad_rows": {source: bad_rows_record(bad) for source, bad in splits.bad.items()},
        "steps": steps, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
        "warmup_ratio": cfg.train.warmup_ratio, "lr_schedule": cfg.train.lr_schedule,
        "seconds": time.perf_counter() - t0, "loss_first": losses[0], "loss_last": losses[-1],
    }
    if attributes is not None:
        report.update(attributes=attributes, ranges={name: list(span) for name, span in splits.ranges.items()})
    return model, tokenizer, report


def evaluate(model: Any, tokenizer: Any, splits: PairSplits, batch_size: int) -> dict[str, Any]:
    """Accuracy on the training pairs and, if any, the held-out pairs (overall and per subset)."""
    from selfplay.models.training import accuracy_report

    out = {"train": accuracy_report(model, tokenizer, splits.train, batch_size)}
    out["held_out"] = accuracy_report(model, tokenizer, splits.held_out, batch_size) if splits.held_out else None
    return out


def evaluate_attributes(model: Any, tokenizer: Any, splits: AttributeSplits, batch_size: int) -> dict[str, Any]:
    """Per-attribute MSE and correlation (0-100 scale) on the training rows and, if any, the held-out rows."""
    from selfplay.models.training import regression_report

    out = {"train": regression_report(model, tokenizer, splits.train, batch_size)}
    out["held_out"] = regression_report(model, tokenizer, splits.held_out, batch_size) if splits.held_out else None
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
    """The lines printed at the end: where the model is, how training went, and the held-out table."""
    trained = (f"{report['kind']} model in {out} ({report['steps']} steps, {report['seconds']:.0f}s, "
               f"loss {report['loss_first']:.3f} -> {report['loss_last']:.3f})")
    if report["kind"] == "multi_objective":
        ranges = ", ".join(f"{name} [{lo:g}, {hi:g}]" for name, (lo, hi) in report["ranges"].items())
        held_out = report["held_out"]
        which, table = ("held-out", held_out) if held_out is not None else ("train", report["train"])
        return "\n".join([trained, f"attributes rescaled to 0-100 from {ranges}",
                          f"{which} regression ({table['rows']} rows, 0-100 scale):", format_regression(table)])
    lines = [trained, f"train accuracy {report['train']['accuracy']:.3f} on {report['train']['pairs']} pairs"]
    if report["held_out"] is not None:
        lines += ["held-out accuracy:", format_report(report["held_out"])]
    return "\n".join(lines)


def format_regression(report: dict[str, Any]) -> str:
    """A ``regression_report`` as a small table: one line per attribute."""
    rows = report["attributes"]
    width = max(len("attribute"), *(len(name) for name in rows))
    lines = [f"  {'attribute':<{width}}      n       mse  correlation"]
    for name, r in rows.items():
        mse = f"{r['mse']:9.2f}" if r["mse"] is not None else f"{'-':>9}"
        lines.append(f"  {name:<{width}}  {r['n']:5d}  {mse}  {r['correlation']:11.3f}")
    return "\n".join(lines)


def run(cfg: DictConfig) -> None:
    """The whole recipe; raises DataError, ModelLoadError or OutExistsError before writing anything."""
    out = check_out(cfg.out)
    cfg = resolve_sources(cfg)
    if cfg.kind == "multi_objective":  # attribute rows, a regression head, per-attribute MSE and correlation
        splits = load_attribute_splits(cfg)
        model, tokenizer, report = train(cfg, splits)
        report.update(evaluate_attributes(model, tokenizer, splits, cfg.train.batch_size))
    else:  # preference pairs, a pair loss, pair accuracy
        splits = load_splits(cfg)
        model, tokenizer, report = train(cfg, splits)
        report.update(evaluate(model, tokenizer, splits, cfg.train.batch_size))
    write_out(out, OmegaConf.merge(cfg, {"out": str(out)}), model, tokenizer, report)
    print(summary(report, out))


def main(argv: list[str] | None = None) -> int:
    """``python -m selfplay.train_pm``: 0 on success, 2 on a config, data, model or ``out`` problem."""
    return run_cli(argv, TrainPMConfig, check_train, USAGE, run, (DataError, ModelLoadError, OutExistsError))


if __name__ == "__main__":
    sys.exit(main())
