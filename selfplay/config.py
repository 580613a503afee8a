"""The run configuration: one structured schema, YAML presets, dotlist overrides.

Every default lives here.  ``load_config(["smoke", "iter=2"])`` merges, in order,
the schema, ``configs/<preset>.yaml`` and the ``key=value`` overrides, and rejects
unknown keys and wrongly typed values before any work starts, naming the key and
the closest valid one.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration problem found before any work: names the key at fault."""


@dataclass
class PolicyConfig:
    # Hub name or local directory of a causal LM; None builds and uses the embedded world's policy
    # (its steerable warm start when directions go into system prompts, i.e. with a multi-objective scorer).
    model: Optional[str] = None
    tokenizer: Optional[str] = None  # defaults to policy.model
    dtype: str = "float32"


@dataclass
class DataConfig:
    # Local .jsonl/.json/.parquet file, or a hub dataset name; None uses the embedded world's prompts.
    prompts: Optional[str] = None
    prompt_column: str = "prompt"
    split: str = "train"
    # Held-out prompts for evaluation; None holds out `eval_size` prompts from `prompts`.
    eval_prompts: Optional[str] = None
    eval_size: int = 64
    prompts_per_iter: int = 128
    # None: iteration t takes the next prompts_per_iter prompts; N: the training prompts are split into N
    # disjoint parts and iteration t draws from part (t - 1) mod N (seed 003: two halves that alternate)
    subsets: Optional[int] = None
    system_prompt: Optional[str] = None
    # Memory replay (algo.replay > 0): original (prompt, response) rows, e.g. the SFT set; same sources as
    # `prompts`.  None uses the embedded world's SFT responses.
    replay: Optional[str] = None
    response_column: str = "response"


@dataclass
class GeneratorConfig:
    backend: str = "vllm"  # vllm | hf
    replicas: int = 1
    k: int = 4  # responses per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    # vLLM engine settings (CPU defaults; raise gpu_memory_utilization on a GPU).
    gpu_memory_utilization: float = 0.3
    enforce_eager: bool = True
    max_model_len: int = 512
    # vLLM's chunked prefill splits long prompts over steps; with per-request seeds it fails on CPU
    # ("CPU Generator does not use offset", e.g. with DPA's system prompts), so it is off unless asked for.
    chunked_prefill: bool = False
    batch_size: int = 256  # hf backend: prompts per generate() call
    num_cpus: float = 0.0  # Ray resources per generator actor
    num_gpus: float = 0.0


@dataclass
class ScorerConfig:
    kind: str = "gpm"  # gpm | bt | pairwise | multi_objective
    # Directory or hub name of a checkpoint of that kind (a GPM in the published layout, a Hugging Face
    # sequence-classification reward model, or one written by selfplay.train_pm); None: the embedded world's.
    model: Optional[str] = None
    tokenizer: Optional[str] = None  # defaults to scorer.model
    k: Optional[int] = None  # GPM only: refuse a checkpoint whose heads are not this size; None reads it
    # GPM: P = sigma(s / tau) (0.1); multi_objective: P = sigma(v^T (r_i - r_j) / tau), rewards on 0-100 (10.0)
    tau: Optional[float] = None
    batch_size: int = 64
    num_cpus: float = 0.0
    num_gpus: float = 0.0


@dataclass
class AlgoConfig:
    """The algorithm and its hyperparameters; None means the algorithm's default (``algorithms.ALGORITHMS``)."""

    name: str = "gpo"  # gpo | sppo | dpo | ipo | simpo | dpa
    beta: Optional[float] = None  # GPO: targets s_hat / beta (2.0); DPO: beta (0.1); SimPO: beta (2.0)
    eta: Optional[float] = None  # SPPO: targets eta * (P_hat - 1/2) (4.0; the released scripts' 1/beta)
    hard: Optional[bool] = None  # SPPO pair recipe: p_w = 1, p_l = 0 (false)
    tau: Optional[float] = None  # IPO: target margin 1/(2 tau) (0.01)
    gamma: Optional[float] = None  # SimPO: target margin (1.0)
    # gpo/sppo: all (every response) | best_worst (METHODS A.2's pair);
    # dpo/ipo/simpo: best_worst | best_random | all_pairs (at most max_pairs per prompt)
    pairs: Optional[str] = None
    max_pairs: int = 4
    min_prob: float = 0.0  # margin filter: drop pairs with P(y_w > y_l) below this
    reference: Optional[str] = None  # dpo/ipo: initial (pi_0) | previous (pi_{t-1}); gpo/sppo: previous; simpo: none
    replay: Optional[float] = None  # DPA: share of the fine-tuning data from data.replay (0.15)
    init: Optional[str] = None  # DPA: each iteration starts from sft (pi_0; seed 003) | previous (pi_{t-1})


@dataclass
class TrainConfig:
    lr: float = 2e-4
    weight_decay: float = 0.0
    epochs: int = 2
    # training examples (a sequence for GPO/SPPO's all-K form, a (chosen, rejected) pair otherwise)
    batch_size: int = 64  # examples per optimizer step
    micro_batch_size: int = 64  # examples per forward pass (gradient accumulation)
    max_grad_norm: float = 1.0
    # learning rate per iteration: linear warm-up over warmup_ratio of the steps, then constant | linear | cosine
    warmup_ratio: float = 0.0
    lr_schedule: str = "constant"
    mixed_precision: str = "auto"  # auto (bf16 on a GPU, else no) | no | bf16 | fp16 (accelerate)
    num_cpus: float = 0.0
    num_gpus: float = 0.0


@dataclass
class EvalConfig:
    prompts: int = 64  # held-out prompts per evaluation (at most data.eval_size)
    samples: int = 4  # responses per prompt and policy; win rates average over samples x samples pairs
    temperature: float = 1.0


@dataclass
class DirectionsConfig:
    """Preference directions (DPA, METHODS 3), used with scorer.kind=multi_objective: each prompt is
    conditioned on a unit vector v over the reward model's attributes, written into its system prompt."""

    # Training, m = 2: theta ~ Uniform(angles) in degrees, v = <cos theta, sin theta> (seed 003: -45..0).
    angles: list[float] = field(default_factory=lambda: [-45.0, 0.0])
    # Any m: uniform over the unit vectors within max_angle degrees of center (used instead of angles).
    center: Optional[list[float]] = None
    max_angle: float = 45.0
    fixed: Optional[list[float]] = None  # one direction for every prompt instead of sampling
    per_prompt: int = 1  # directions drawn per prompt each iteration (seed 003: 5); K responses each
    # Evaluation: grid_size directions with angles evenly over grid_angles (m = 2; seed 003 fig. 4:
    # 10 from <1, 0> to <sqrt2/2, sqrt2/2>), or an explicit list in grid (any m).
    grid_size: int = 10
    grid_angles: list[float] = field(default_factory=lambda: [0.0, 45.0])
    grid: Optional[list[list[float]]] = None
    # Hypervolume reference point (one value per attribute, 0-100 scale); None: the origin.
    hv_reference: Optional[list[float]] = None


@dataclass
class WorldConfig:
    """The embedded world: tokenizer, tiny Llama policy, prompts, oracle and its GPM."""

    cache_dir: str = "~/.cache/selfplay/world"
    seed: int = 0
    n_prompts: int = 1024
    # policy size (head_dim = hidden / heads must be 64 for vLLM's CPU attention)
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    vocab_size: int = 1024
    sft_steps: int = 300
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    # the preference models (GPM: the default scorer; bt and pairwise on first use), on oracle-labelled pairs
    gpm_k: int = 2
    pm_pairs: int = 6000
    pm_steps: int = 400
    pm_batch_size: int = 32
    pm_lr: float = 2e-3


@dataclass
class RunSettings:
    dir: str = "runs/default"
    seed: int = 0
    resume: bool = False
    # Ray: None connects to RAY_ADDRESS / a running cluster if any, else starts a local one.
    ray_address: Optional[str] = None
    progress: bool = True


@dataclass
class Config:
    iter: int = 3
    run: RunSettings = field(default_factory=RunSettings)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    world: WorldConfig = field(default_factory=WorldConfig)


GENERATOR_BACKENDS = ("vllm", "hf")
SCORER_KINDS = ("gpm", "bt", "pairwise", "multi_objective")
DEFAULT_TAU = {"gpm": 0.1, "multi_objective": 10.0}  # scorer.tau when unset
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
LR_SCHEDULES = ("constant", "linear", "cosine")
# ``algo=NAME`` on the command line selects an algorithm with its defaults: ``algo.name=NAME``.
SHORTHANDS = {"algo": "algo.name"}


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
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot parse override '{item}': {e}") from None
        cfg = _merge(cfg, dot, f"command line '{item}'", key_hint=item.split("=", 1)[0])
    (check or validate)(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks no type can express; each message names the key."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(cfg.iter >= 1, f"iter must be >= 1, got {cfg.iter}")
    need(cfg.generator.k >= 2, f"generator.k must be >= 2 (self-play compares responses), got {cfg.generator.k}")
    need(cfg.generator.backend in GENERATOR_BACKENDS,
         f"generator.backend must be one of {GENERATOR_BACKENDS}, got '{cfg.generator.backend}'")
    need(cfg.generator.replicas >= 1, f"generator.replicas must be >= 1, got {cfg.generator.replicas}")
    need(cfg.generator.max_new_tokens >= 1, "generator.max_new_tokens must be >= 1")
    need(cfg.generator.temperature >= 0, "generator.temperature must be >= 0")
    need(cfg.scorer.kind in SCORER_KINDS, f"scorer.kind must be one of {SCORER_KINDS}, got '{cfg.scorer.kind}'")
    if cfg.scorer.tau is None:
        cfg.scorer.tau = DEFAULT_TAU.get(cfg.scorer.kind)
    need(cfg.scorer.tau is None or cfg.scorer.tau > 0, f"scorer.tau must be > 0, got {cfg.scorer.tau}")
    need(cfg.scorer.k is None or (cfg.scorer.kind == "gpm" and cfg.scorer.k >= 1),
         f"scorer.k applies to scorer.kind=gpm only and must be >= 1, got k={cfg.scorer.k} with kind={cfg.scorer.kind}")
    from selfplay.algorithms import ALGORITHMS, resolve_algo  # imports torch: only when validating

    need(cfg.algo.name in ALGORITHMS, f"algo.name must be one of {tuple(ALGORITHMS)}, got '{cfg.algo.name}'")
    try:
        resolve_algo(cfg.algo)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    directional = cfg.scorer.kind == "multi_objective"
    need(cfg.algo.name != "dpa" or directional,
         f"algo.name=dpa ranks responses by v^T r: it needs scorer.kind=multi_objective, got '{cfg.scorer.kind}'")
    d = cfg.directions
    need(directional or (d.fixed is None and d.center is None and d.per_prompt == 1 and d.grid is None),
         "directions.* condition prompts on directions over a multi-objective reward model's attributes: "
         f"they need scorer.kind=multi_objective, got '{cfg.scorer.kind}'")
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
    need(cfg.train.epochs >= 1, "train.epochs must be >= 1")
    need(cfg.train.batch_size >= 1 and cfg.train.micro_batch_size >= 1, "train.batch_size and train.micro_batch_size must be >= 1")
    need(cfg.train.batch_size % cfg.train.micro_batch_size == 0,
         f"train.batch_size ({cfg.train.batch_size}) must be a multiple of train.micro_batch_size ({cfg.train.micro_batch_size})")
    need(cfg.train.mixed_precision in MIXED_PRECISION,
         f"train.mixed_precision must be one of {MIXED_PRECISION}, got '{cfg.train.mixed_precision}'")
    need(0.0 <= cfg.train.warmup_ratio < 1.0, f"train.warmup_ratio must lie in [0, 1), got {cfg.train.warmup_ratio}")
    need(cfg.train.lr_schedule in LR_SCHEDULES,
         f"train.lr_schedule must be one of {LR_SCHEDULES}, got '{cfg.train.lr_schedule}'")
    need(cfg.world.hidden_size % cfg.world.num_heads == 0, "world.hidden_size must be divisible by world.num_heads")


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
            lines[-1] += "  (unset: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_TAU.items()) + ")"
    from selfplay.algorithms import ALGORITHMS

    lines += ["", "algorithms (algo=NAME) and the defaults of their keys:"]
    for name, a in ALGORITHMS.items():
        keys = [f"{k}={v}" for k, v in a.params.items()] + [f"pairs={'|'.join(a.pairs)}"]
        keys.append(f"reference={'|'.join(a.references) or 'none'}")
        lines.append(f"  {name:<6} " + " ".join(keys))
    lines += ["", "every key: see selfplay/config.py"]
    return "\n".join(lines)

