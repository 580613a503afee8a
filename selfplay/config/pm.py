"""Configuration of the preference-model entry points ``selfplay.train_pm`` and ``selfplay.eval_pm``.

The schemas below hold every default; ``configs/pm/<preset>.yaml`` and
``key=value`` overrides merge onto them through ``selfplay.config.load_config``,
which rejects unknown keys and wrong types.  ``check_train`` / ``check_eval``
refuse values no type can express, each message naming the key.  ``run_cli`` is
the shared command-line shell: --help, config errors and run errors as exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from selfplay.config.loading import check_world, load_config, need, presets
from selfplay.config.schema import CONFIG_DIR, LR_SCHEDULES, ConfigError, WorldConfig

PM_PRESET_DIR = CONFIG_DIR / "pm"
HEAD_INITS = ("random", "difference")


@dataclass
class TrainDataConfig:
    # Rows to train on: a local .jsonl/.json/.parquet file, a directory of them, or a hub dataset.  Pair kinds
    # (gpm, bt, pairwise) read prompt/chosen/rejected pairs; None: the embedded world's oracle-labelled pairs
    # (pairs/train.jsonl, held out: pairs/test.jsonl).  kind=multi_objective reads attribute rows (a prompt, a
    # response, one numeric or null column per attribute; selfplay/data/attributes.py); None: the world's
    # attribute rows (train.jsonl / test.jsonl of World.attribute_data).
    path: str | None = None
    split: str = "train"
    # Held-out rows; None holds out `eval_share` of `path` (or, for the world, uses its test.jsonl).
    eval_path: str | None = None
    eval_split: str = "test"
    eval_share: float = 0.1
    subset_column: str | None = "subset"  # pair kinds only: per-subset accuracy; null: none
    max_bad_share: float = 0.05  # refuse a source with a larger share of malformed rows
    # kind=multi_objective only:
    prompt_column: str = "prompt"
    response_column: str = "response"
    # The attribute columns, in head order; None: the numeric (or null) columns of the first row, in order.
    attributes: list[str] | None = None
    # Per-attribute [lo, hi] mapped linearly to 0-100 (e.g. {helpfulness: [0, 4]}); an attribute not named
    # here (or None: every attribute) is rescaled from its observed min/max over the training rows.  With the
    # world's rows (data.path None) None means [0, 100] for each: they are on that scale already.
    attribute_ranges: dict[str, Any] | None = None


@dataclass
class TrainSettings:
    steps: int | None = None  # None: ceil(epochs * n_train / batch_size)
    epochs: float = 1.0
    batch_size: int = 32  # pairs per step (also per evaluation batch)
    lr: float = 2e-3
    warmup_ratio: float = 0.1  # of the steps, the learning rate rising linearly; then lr_schedule
    lr_schedule: str = "linear"  # constant | linear (decay to 0) | cosine (to 0)
    seed: int = 0  # minibatches, head initialisation, and the eval_share split
    device: str = "auto"  # auto: cuda if available, else cpu


@dataclass
class TrainPMConfig:
    kind: str = "gpm"  # gpm | bt | pairwise | multi_objective
    # Backbone: any causal-LM checkpoint (directory or hub name); None: the embedded world's SFT policy.
    model: str | None = None
    tokenizer: str | None = None  # defaults to model
    k: int = 2  # GPM only: 2k-dimensional embeddings
    gate: bool = True  # GPM only: the prompt-dependent scale gate
    tau: float = 0.1  # GPM only
    # GPM only: the value head's start.  random; or difference: the 2k directions where the difference between
    # the training pairs' chosen and rejected responses is the largest share of the state
    # (selfplay.models.training.init_gpm_head), for pairs that share most of their text.
    head_init: str = "random"
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    out: str = "runs/pm"  # the checkpoint directory to create (never overwritten)
    world: WorldConfig = field(default_factory=WorldConfig)


@dataclass
class EvalScorerConfig:
    # gpm | bt | pairwise | pairrm (its source: the raw last user turn) (multi_objective: see train_pm's eval_report.json)
    kind: str = "gpm"
    model: str | None = None  # required: a checkpoint directory or hub name of that kind
    tokenizer: str | None = None  # defaults to scorer.model
    k: int | None = None  # GPM only: refuse a checkpoint whose heads are not this size; None reads it
    tau: float | None = None  # GPM only; None: the checkpoint's own
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "auto"  # as scorer.dtype: bfloat16 on a GPU, float32 on the CPU
    trust_remote_code: bool = False  # as the run's scorer.trust_remote_code
    allow_pickle: bool = False  # as the run's scorer.allow_pickle


@dataclass
class EvalDataConfig:
    # Pairs to score (same sources as train_pm's data.path); None: the embedded world's held-out pairs.
    path: str | None = None
    split: str = "test"
    subset_column: str | None = "subset"
    max_bad_share: float = 0.05


@dataclass
class EvalPMConfig:
    scorer: EvalScorerConfig = field(default_factory=EvalScorerConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    out: str | None = None  # report JSON path; None: print only
    world: WorldConfig = field(default_factory=WorldConfig)


def _check_common(kind_key: str, kind: str, device_key: str, device: str, max_bad_share: float) -> None:
    """Checks both entry points share: the model kind, the device and data.max_bad_share."""
    from selfplay.models import KINDS

    need(kind in KINDS, f"{kind_key} must be one of {KINDS}, got '{kind}'")
    need(0 <= max_bad_share <= 1, f"data.max_bad_share must be in [0, 1], got {max_bad_share}")
    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"{device_key} must be auto, cpu, cuda, cuda:N or another torch device, got '{device}': {e}"
        ) from None


def _kind_keys() -> dict[str, tuple[str, ...]]:
    """The keys of TrainPMConfig that apply to some kinds only, and those kinds."""
    from selfplay.models import PAIR_KINDS

    multi = ("multi_objective",)
    return {"k": ("gpm",), "gate": ("gpm",), "tau": ("gpm",), "head_init": ("gpm",), "data.subset_column": PAIR_KINDS,
            "data.prompt_column": multi, "data.response_column": multi, "data.attributes": multi,
            "data.attribute_ranges": multi}


def check_train(cfg: DictConfig) -> None:
    """Checks on a TrainPMConfig that no type can express; each message names the key."""
    _check_common("kind", cfg.kind, "train.device", cfg.train.device, cfg.data.max_bad_share)
    from selfplay.models import TRAINED_KINDS

    need(cfg.kind in TRAINED_KINDS, f"kind={cfg.kind} is a published checkpoint read as it is, not trained here; "
                                    f"train_pm trains kind={' | '.join(TRAINED_KINDS)}")
    check_world(cfg.world)
    defaults = OmegaConf.structured(TrainPMConfig)
    for key, kinds in _kind_keys().items():
        value = OmegaConf.select(cfg, key)
        need(cfg.kind in kinds or value == OmegaConf.select(defaults, key),
              f"{key} applies to kind={' | '.join(kinds)} only, not kind={cfg.kind}; drop {key}={value}")
    d = cfg.data
    need(d.attributes is None or (len(d.attributes) > 0 and len(set(d.attributes)) == len(d.attributes)),
          f"data.attributes must name distinct attribute columns (or be null: inferred), got {d.attributes}")
    for name, span in (d.attribute_ranges or {}).items():
        ok = (OmegaConf.is_list(span) and len(span) == 2 and all(isinstance(x, (int, float)) for x in span)
              and span[1] > span[0])
        need(ok, f"data.attribute_ranges.{name} must be [lo, hi] with numbers lo < hi, got {span}")
    need(cfg.k >= 1, f"k must be >= 1, got {cfg.k}")
    need(cfg.tau > 0, f"tau must be > 0, got {cfg.tau}")
    need(cfg.head_init in HEAD_INITS, f"head_init must be one of {HEAD_INITS}, got '{cfg.head_init}'")
    need(0 <= cfg.data.eval_share < 1, f"data.eval_share must be in [0, 1), got {cfg.data.eval_share}")
    t = cfg.train
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    need(0 <= t.warmup_ratio < 1, f"train.warmup_ratio must lie in [0, 1), got {t.warmup_ratio}")
    need(t.lr_schedule in LR_SCHEDULES, f"train.lr_schedule must be one of {LR_SCHEDULES}, got '{t.lr_schedule}'")
    need(t.steps is None or t.steps >= 1, f"train.steps must be >= 1 (or null: from train.epochs), got {t.steps}")
    need(t.epochs > 0, f"train.epochs must be > 0, got {t.epochs}")
    need(bool(cfg.out), "out must name the checkpoint directory to create")


def check_eval(cfg: DictConfig) -> None:
    """Checks on an EvalPMConfig that no type can express; each message names the key."""
    s = cfg.scorer
    _check_common("scorer.kind", s.kind, "scorer.device", s.device, cfg.data.max_bad_share)
    check_world(cfg.world)
    need(s.kind != "multi_objective",
          "scorer.kind=multi_objective has no pair accuracy: its rewards rank pairs only along a direction over "
          "its attributes. Its per-attribute held-out MSE and correlation are in the eval_report.json that "
          "selfplay.train_pm kind=multi_objective writes")
    need(s.model is not None, "scorer.model is required: the checkpoint directory or hub name to evaluate "
                               "(e.g. the out directory of selfplay.train_pm)")
    need(s.k is None or (s.kind == "gpm" and s.k >= 1),
          f"scorer.k applies to scorer.kind=gpm only and must be >= 1, got k={s.k} with kind={s.kind}")
    from selfplay.config.scoring import SCORER_DTYPES

    need(s.dtype in SCORER_DTYPES, f"scorer.dtype must be one of {SCORER_DTYPES}, got '{s.dtype}'")
    need(s.tau is None or s.tau > 0, f"scorer.tau must be > 0, got {s.tau}")
    need(s.batch_size >= 1, f"scorer.batch_size must be >= 1, got {s.batch_size}")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu``; any other name must parse as a torch device."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(torch.device(name))


def world_pairs_file(world: DictConfig, name: str) -> str:
    """The embedded world's labelled pairs file ``name`` (train.jsonl or test.jsonl), building the world if needed."""
    from selfplay.world.build import get_world

    return str(Path(get_world(world).pairs) / name)


def world_attribute_file(world: DictConfig, name: str) -> str:
    """The embedded world's attribute rows ``name`` (train.jsonl or test.jsonl), building the world if needed."""
    from selfplay.world.build import get_world

    return str(Path(get_world(world).attribute_data(world)) / name)


def command_help(command: str, summary: str, schema_class: type, main_keys: list[str]) -> str:
    """Usage, the presets of ``configs/pm/`` that run ``command``, and ``main_keys`` with their defaults."""
    schema = OmegaConf.structured(schema_class)
    own = {name: cmd for name, cmd in presets(PM_PRESET_DIR).items() if command in cmd}
    width = max([12, *(len(name) for name in own)])
    return "\n".join([
        f"usage: python -m {command} [PRESET] [key=value ...]",
        "",
        summary,
        "",
        "presets (configs/pm/*.yaml):",
        *(f"  {name:<{width}} {cmd}" for name, cmd in own.items()),
        "",
        "main keys (defaults):",
        *(f"  {key}={OmegaConf.select(schema, key)}" for key in main_keys),
        "",
        "every key: see selfplay/config/pm.py",
    ])


def run_cli(
    argv: list[str] | None,
    schema_class: type,
    check: Callable[[DictConfig], None],
    usage: str,
    body: Callable[[DictConfig], None],
    errors: tuple[type[Exception], ...],
) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into a config and run ``body`` on it.

    Returns 0 on success, 2 with the message on stderr for a ConfigError or one of ``errors``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(argv, schema_class=schema_class, preset_dir=PM_PRESET_DIR, check=check)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        body(cfg)
    except (ConfigError, *errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
