"""The run configuration: one structured schema, YAML presets, dotlist overrides.

Every default lives here.  ``load_config(["smoke", "iter=2"])`` merges, in order,
the schema, ``configs/<preset>.yaml`` and the ``key=value`` overrides, and rejects
unknown keys and wrongly typed values before any work starts, naming the key and
the closest valid one.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from selfplay.config.schema import (
    CONFIG_DIR,
    DEFAULT_TAU,
    DTYPE_NAMES,
    GENERATOR_BACKENDS,
    LR_SCHEDULES,
    MIXED_PRECISION,
    PLACEMENT_STRATEGIES,
    SHORTHANDS,
    SYNC_TRANSPORTS,
    TIMED_STAGES,
    Config,
    ConfigError,
)
from selfplay.models import AGGREGATES, DIRECTIONAL_KINDS, KINDS, PAIRRM_SOURCES


def presets(preset_dir: Path = CONFIG_DIR) -> dict[str, str]:
    """Preset name -> its first comment line (the command that runs it)."""
    out = {}
    for path in sorted(preset_dir.glob("*.yaml")):
        first = path.read_text().splitlines()[:1]
        out[path.stem] = first[0].lstrip("# ").strip() if first else ""
    return out


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = f"{prefix}{k}"
            keys.append(full)
            keys.extend(_all_keys(node._get_node(k), full + "."))
    return keys


def _suggest(key: str, schema: DictConfig) -> str:
    candidates = _all_keys(schema)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:  # compare the last component, e.g. "generator.kk" -> "generator.k"
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.5)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f"; did you mean '{match[0]}'?" if match else ""


def _merge(schema: DictConfig, other: DictConfig, source: str, key_hint: str | None = None) -> DictConfig:
    try:
        return OmegaConf.merge(schema, other)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = e.full_key or (str(e.key) if e.key is not None else key_hint)
        raise ConfigError(f"unknown config key '{key}' (from {source}){_suggest(key, schema)}") from None
    except ValidationError as e:
        key = e.full_key or key_hint
        detail = (e.msg or "wrong type").splitlines()[0]
        raise ConfigError(f"bad value for '{key}' (from {source}): {detail}") from None


def load_config(
    args: list[str] | tuple[str, ...] = (),
    schema_class: type = Config,
    preset_dir: Path = CONFIG_DIR,
    check: Callable[[DictConfig], None] | None = None,
) -> DictConfig:
    """Schema <- optional preset (first arg without '=') <- key=value overrides; validated.

    The defaults are the run's (``Config``, ``configs/``, ``validate``); the other
    entry points (``selfplay.train_pm``, ``selfplay.eval_pm``) pass their own.
    """
    schema = OmegaConf.structured(schema_class)
    preset = None
    overrides = []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif preset is None:
            preset = a
        else:
            raise ConfigError(f"unexpected argument '{a}': give one preset name, then key=value overrides")
    cfg = schema
    if preset is not None:
        path = preset_dir / f"{preset}.yaml"
        if not path.exists():
            names = list(presets(preset_dir))
            close = difflib.get_close_matches(preset, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown preset '{preset}' (presets: {', '.join(names)}){hint}")
        cfg = _merge(cfg, OmegaConf.load(path), str(path.relative_to(CONFIG_DIR.parent)))
    for item in overrides:  # one at a time, so an error names the override at fault
        key, _, value = item.partition("=")
        if schema_class is Config and key in SHORTHANDS:
            item = f"{SHORTHANDS[key]}={value}"
        try:
            dot = OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as e:  # OmegaConf lets YAML's parse errors through
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot parse override '{item}': {first}") from None
        cfg = _merge(cfg, dot, f"command line '{item}'", key_hint=item.split("=", 1)[0])
    (check or validate)(cfg)
    OmegaConf.set_readonly(cfg, True)  # validated: nothing writes to it from here on
    return cfg


def need(ok: bool, msg: str) -> None:
    """Refuse a configuration with ``msg`` (one line naming the key) unless ``ok``."""
    if not ok:
        raise ConfigError(msg)


def validate(cfg: DictConfig) -> None:
    """Checks no type can express; each message names the key."""
    need(cfg.iter >= 1, f"iter must be >= 1, got {cfg.iter}")
    need(cfg.generator.k >= 2, f"generator.k must be >= 2 (self-play compares responses), got {cfg.generator.k}")
    need(cfg.generator.backend in GENERATOR_BACKENDS,
         f"generator.backend must be one of {GENERATOR_BACKENDS}, got '{cfg.generator.backend}'")
    need(cfg.generator.replicas >= 1, f"generator.replicas must be >= 1, got {cfg.generator.replicas}")
    need(cfg.generator.max_new_tokens >= 1, "generator.max_new_tokens must be >= 1")
    need(cfg.generator.temperature >= 0, "generator.temperature must be >= 0")
    need(cfg.scorer.kind in KINDS, f"scorer.kind must be one of {KINDS}, got '{cfg.scorer.kind}'")
    need(cfg.scorer.tau is None or cfg.scorer.tau > 0, f"scorer.tau must be > 0, got {cfg.scorer.tau}")
    need(cfg.scorer.k is None or (cfg.scorer.kind == "gpm" and cfg.scorer.k >= 1),
         f"scorer.k applies to scorer.kind=gpm only and must be >= 1, got k={cfg.scorer.k} with kind={cfg.scorer.kind}")
    check_pairrm(cfg.scorer)
    from selfplay.algorithms.registry import ALGORITHMS, check_algo, resolve

    need(cfg.algo.name in ALGORITHMS, f"algo.name must be one of {tuple(ALGORITHMS)}, got '{cfg.algo.name}'")
    try:
        check_algo(cfg.algo)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    from selfplay.config.scoring import SCORER_DTYPES, directional, directions_set

    need(cfg.scorer.dtype in SCORER_DTYPES, f"scorer.dtype must be one of {SCORER_DTYPES}, got '{cfg.scorer.dtype}'")
    check_attributes(cfg.scorer)
    multi = f"scorer.kind={' | '.join(DIRECTIONAL_KINDS)}"
    algorithm = resolve(cfg.algo)
    need(not algorithm.needs_directions or directional(cfg),
         f"algo.name={cfg.algo.name} ranks responses by v^T r: it needs {multi}, got '{cfg.scorer.kind}'")
    d = cfg.directions
    need(directional(cfg) or not directions_set(d),
         "directions.* condition prompts on directions over a multi-objective reward model's attributes: "
         f"they need {multi}, got '{cfg.scorer.kind}'")
    need(d.per_prompt >= 1, f"directions.per_prompt must be >= 1, got {d.per_prompt}")
    need(len(d.angles) == 2 and d.angles[0] <= d.angles[1],
         f"directions.angles must be [low, high] degrees with low <= high, got {list(d.angles)}")
    need(len(d.grid_angles) == 2, f"directions.grid_angles must be [start, end] degrees, got {list(d.grid_angles)}")
    need(d.grid_size >= 1, f"directions.grid_size must be >= 1, got {d.grid_size}")
    need(0 < d.max_angle <= 180, f"directions.max_angle must lie in (0, 180] degrees, got {d.max_angle}")
    need(cfg.data.subsets is None or cfg.data.subsets >= 1, f"data.subsets must be >= 1, got {cfg.data.subsets}")
    need(cfg.data.prompts_per_iter >= 1, "data.prompts_per_iter must be >= 1")
    need(cfg.data.eval_size >= 1, "data.eval_size must be >= 1")
    need(1 <= cfg.eval.prompts, "eval.prompts must be >= 1")
    need(cfg.eval.samples >= 1, "eval.samples must be >= 1")
    need(cfg.log.samples >= 0, f"log.samples must be >= 0, got {cfg.log.samples}")
    need(0 < cfg.log.report_share <= 1, f"log.report_share is a share of the wall time, in (0, 1], got "
                                         f"{cfg.log.report_share}")
    need(cfg.train.epochs >= 1, "train.epochs must be >= 1")
    need(cfg.train.batch_size >= 1 and cfg.train.micro_batch_size >= 1, "train.batch_size and train.micro_batch_size must be >= 1")
    need(cfg.train.batch_size % cfg.train.micro_batch_size == 0,
         f"train.batch_size ({cfg.train.batch_size}) must be a multiple of train.micro_batch_size ({cfg.train.micro_batch_size})")
    need(cfg.train.mixed_precision in MIXED_PRECISION,
         f"train.mixed_precision must be one of {MIXED_PRECISION}, got '{cfg.train.mixed_precision}'")
    for key, value in (("policy.dtype", cfg.policy.dtype), ("generator.dtype", cfg.generator.dtype)):
        need(value is None or value in DTYPE_NAMES, f"{key} must be one of {DTYPE_NAMES}, got '{value}'")
    need(cfg.placement.strategy in PLACEMENT_STRATEGIES,
         f"placement.strategy must be one of {PLACEMENT_STRATEGIES}, got '{cfg.placement.strategy}'")
    need(cfg.placement.sleep_level in (1, 2), f"placement.sleep_level must be 1 or 2, got {cfg.placement.sleep_level}")
    need(not cfg.placement.colocate or cfg.generator.backend != "vllm" or cfg.generator.num_gpus > 0,
         "placement.colocate=true with generator.backend=vllm needs GPUs (generator.num_gpus > 0): vLLM's sleep "
         "mode frees GPU memory and does nothing on a CPU")
    need(cfg.generator.tensor_parallel >= 1, f"generator.tensor_parallel must be >= 1, got {cfg.generator.tensor_parallel}")
    need(cfg.generator.tensor_parallel == 1 or cfg.generator.backend == "vllm",
         "generator.tensor_parallel > 1 needs generator.backend=vllm")
    need(cfg.sync.bucket_mb > 0, f"sync.bucket_mb must be > 0, got {cfg.sync.bucket_mb}")
    need(cfg.sync.timeout_s > 0, f"sync.timeout_s must be > 0, got {cfg.sync.timeout_s}")
    need(cfg.run.stage_timeout_s > 0, f"run.stage_timeout_s must be > 0, got {cfg.run.stage_timeout_s}")
    need(cfg.run.max_failures >= 0, f"run.max_failures must be >= 0, got {cfg.run.max_failures}")
    for stage, seconds in cfg.run.stage_timeouts.items():
        need(stage in TIMED_STAGES, f"run.stage_timeouts.{stage}: not a stage; the stages are {TIMED_STAGES} "
                                    "(weight sync is bounded by sync.timeout_s)")
        need(seconds > 0, f"run.stage_timeouts.{stage} must be > 0, got {seconds}")
    transport = cfg.sync.transport
    need(transport in SYNC_TRANSPORTS, f"sync.transport must be one of {SYNC_TRANSPORTS}, got '{transport}'")
    need(transport == "object_store" or (cfg.generator.backend == "vllm" and cfg.generator.num_gpus > 0
                                         and cfg.train.num_gpus > 0),
         f"sync.transport={transport} is vLLM's GPU-to-GPU weight transfer: it needs generator.backend=vllm and "
         "GPUs for the generators and the learner (generator.num_gpus > 0, train.num_gpus > 0); use object_store")
    need(transport != "ipc" or cfg.placement.colocate,
         "sync.transport=ipc shares GPU memory between processes on one GPU: it needs placement.colocate=true")
    need(transport != "nccl" or not cfg.placement.colocate,
         "sync.transport=nccl cannot join two processes on one GPU: with placement.colocate=true use ipc")
    need(cfg.train.lora.rank >= 0, f"train.lora.rank must be >= 0, got {cfg.train.lora.rank}")
    if algorithm.coded:
        need(cfg.generator.tensor_parallel == 1, "algo.lpc's code bias runs in the generator's own process: "
             "set generator.tensor_parallel=1")
        need(cfg.train.world_size == 1 and cfg.train.lora.rank == 0,
             "algo.lpc trains its heads beside one unsharded policy: set train.world_size=1 and train.lora.rank=0")
    need(cfg.train.world_size >= 1, f"train.world_size must be >= 1, got {cfg.train.world_size}")
    need(cfg.train.batch_size % cfg.train.world_size == 0,
         f"train.batch_size ({cfg.train.batch_size}) must be a multiple of train.world_size ({cfg.train.world_size}): "
         "each rank takes an equal share of a step")
    need(cfg.train.world_size == 1 or cfg.train.mixed_precision != "fp16",
         "train.mixed_precision=fp16 needs train.world_size=1 (sharded training uses bf16 or full precision)")
    need(0.0 <= cfg.train.warmup_ratio < 1.0, f"train.warmup_ratio must lie in [0, 1), got {cfg.train.warmup_ratio}")
    need(cfg.train.lr_schedule in LR_SCHEDULES,
         f"train.lr_schedule must be one of {LR_SCHEDULES}, got '{cfg.train.lr_schedule}'")
    check_world(cfg.world)


def check_attributes(s: DictConfig) -> None:
    """``scorer.attributes``: None, a mapping of distinct names to distinct rows >= 0, or a list of distinct names,
    for a multi-objective kind only."""
    a = s.attributes
    if a is None:
        return
    need(s.kind in DIRECTIONAL_KINDS, "scorer.attributes selects a multi-objective model's outputs: it needs "
                                      f"scorer.kind={' | '.join(DIRECTIONAL_KINDS)}, got '{s.kind}'")
    if OmegaConf.is_dict(a):
        rows = list(a.values())
        need(len(a) > 0 and all(type(r) is int and r >= 0 for r in rows) and len(set(rows)) == len(rows),
             f"scorer.attributes must map names to distinct rows >= 0 (e.g. {{helpfulness: 0, verbosity: 4}}), got {a}")
        return
    need(OmegaConf.is_list(a) and len(a) > 0 and all(isinstance(n, str) for n in a) and len(set(a)) == len(a),
         f"scorer.attributes must be distinct names of the model's outputs or a {{name: row}} mapping, got {a}")


def check_pairrm(s: DictConfig) -> None:
    """The scorer keys of PairRM and SPPO's aggregation; each message names the key."""
    need(s.kind != "pairrm" or s.model is not None, "scorer.kind=pairrm needs scorer.model (llm-blender/PairRM, "
                                                    "llm-blender/PairRM-hf or a copy): the embedded world has none")
    need(s.source in PAIRRM_SOURCES, f"scorer.source must be one of {PAIRRM_SOURCES}, got '{s.source}'")
    need(s.kind == "pairrm" or s.source == "template", f"scorer.source applies to scorer.kind=pairrm only, not {s.kind}")
    need(s.aggregate in AGGREGATES, f"scorer.aggregate must be one of {AGGREGATES}, got '{s.aggregate}'")
    need(s.aggregate == "none" or s.kind != "multi_objective",
         "scorer.aggregate=sppo aggregates a K x K matrix: a multi_objective scorer's come from directions")


def check_world(world: DictConfig) -> None:
    """Checks on a WorldConfig that no type can express; each message names the key."""
    need(world.hidden_size % world.num_heads == 0, "world.hidden_size must be divisible by world.num_heads")
    s, a = world.steerable, world.attributes
    need(s.steps >= 1 and s.lr > 0,
         f"world.steerable.steps must be >= 1 and world.steerable.lr > 0, got {s.steps}, {s.lr}")
    need(len(s.angles) == 2 and s.angles[0] <= s.angles[1],
         f"world.steerable.angles must be [lo, hi] degrees with lo <= hi, got {list(s.angles)}")
    need(s.candidates >= 1, f"world.steerable.candidates must be >= 1, got {s.candidates}")
    need(a.train_rows >= 1 and a.test_rows >= 1,
         f"world.attributes.train_rows and test_rows must be >= 1, got {a.train_rows}, {a.test_rows}")
    need(0 <= a.missing_share <= 0.5, f"world.attributes.missing_share must lie in [0, 0.5], got {a.missing_share}")
    need(world.sft_data.rows >= 1, f"world.sft_data.rows must be >= 1, got {world.sft_data.rows}")
    need(world.length_by_kind >= 0, "world.length_by_kind must be >= 0 (brief prompts prefer short answers, the "
                                    f"others long ones; 0: length not rewarded), got {world.length_by_kind}")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def help_text() -> str:
    lines = [
        "usage: python -m selfplay.run [PRESET] [key=value ...]",
        "",
        "Runs iterative self-play alignment. Without policy.model / data.prompts it uses the",
        "embedded world (built once and cached). The resolved config is saved as RUN_DIR/config.yaml.",
        "",
        "presets (configs/*.yaml):",
    ]
    for name, cmd in presets().items():
        lines.append(f"  {name:<12} {cmd}")
    lines += ["", "main keys (defaults):"]
    main = ["iter", "run.dir", "run.seed", "run.resume", "policy.model", "data.prompts", "data.prompt_column",
            "data.prompts_per_iter", "generator.backend", "generator.replicas", "generator.k", "generator.temperature",
            "generator.max_new_tokens", "scorer.kind", "scorer.model", "scorer.tau", "algo.name", "algo.pairs", "directions.angles",
            "directions.per_prompt", "directions.grid_size", "directions.grid_angles",
            "train.lr", "train.epochs", "train.batch_size", "eval.prompts", "eval.samples"]
    schema = OmegaConf.structured(Config)
    for key in main:
        lines.append(f"  {key}={OmegaConf.select(schema, key)}")
        if key == "scorer.tau":
            lines[-1] += "  (by scorer.kind: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_TAU.items()) + ")"
    from selfplay.algorithms.registry import ALGORITHMS

    lines += ["", "algorithms (algo=NAME) and the defaults of their keys:"]
    for name, a in ALGORITHMS.items():
        defaults = a.defaults()
        keys = [f"{k}={defaults[k]}" for k in a.params] + [f"pairs={defaults['pairs']} ({'|'.join(a.pairs)})"]
        keys.append(f"reference={defaults['reference']} ({'|'.join(a.references)})" if a.references else "reference=none")
        lines.append(f"  {name:<6} " + " ".join(keys))
    lines += ["", "every key: see selfplay/config/schema.py"]
    return "\n".join(lines)


def load_or_report(argv: list[str]) -> DictConfig | None:
    """``load_config(argv)`` for an entry point: None after printing the config error in one line."""
    try:
        return load_config(argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return None
