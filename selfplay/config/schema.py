"""The run's structured config schema: every key, its type and its default (the embedded world's keys in
``selfplay.config.embedded``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from selfplay.algorithms.latent import LpcSettings
from selfplay.algorithms.registry import ALGORITHMS, key_types
from selfplay.config.embedded import WorldConfig
from selfplay.config.scoring import DEFAULT_TAU, ScorerConfig  # noqa: F401 (part of the schema)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A configuration problem found before any work: names the key at fault."""


@dataclass
class PolicyConfig:
    # Hub name or local directory of a causal LM; None builds and uses the embedded world's policy
    # (its steerable warm start when directions go into system prompts, i.e. with a multi-objective scorer).
    model: Optional[str] = None
    tokenizer: Optional[str] = None  # defaults to policy.model
    dtype: str = "float32"
    trust_remote_code: bool = False  # run the model's own code (config.json's auto_map); off: refused (preflight)
    allow_pickle: bool = False  # load pickle weights (*.bin: unpickling runs code) where it has no safetensors


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
    # disjoint parts and iteration t draws from part (t - 1) mod N ([DPA]: two halves that alternate)
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
    tensor_parallel: int = 1  # vLLM: devices per replica (tensor parallelism); 1 on a CPU
    # The engine's weights; None: policy.dtype (the learner's, which keeps its master weights in it: on GPUs
    # keep policy.dtype=float32 and serve bfloat16 here; weight sync casts on load).
    dtype: Optional[str] = None
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


# Each algorithm's defaults for the ``algo`` keys it owns, from its unit's config (``selfplay.algorithms.<name>``;
# docs/methods.md §3-6; the tiny world's values where the papers' are for 7B models, see docs/algorithms.md).  An ``algo``
# key left unset reads its algorithm's default through the ``algo_default`` interpolation, and None where its
# algorithm does not own it.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {name: a.defaults() for name, a in ALGORITHMS.items()}
OmegaConf.register_resolver("algo_default", lambda key, name: ALGORITHM_DEFAULTS.get(name, {}).get(key),
                            replace=True)


def _algo_default(key: str) -> Any:
    return field(default=f"${{algo_default:{key},${{.name}}}}")


def _algo_fields() -> list[tuple[str, Any, Any]]:
    """``algo``'s keys: the name, the union of the units' keys (each unset: its algorithm's default), the pair
    filter's, and LPC's settings."""
    keys = key_types()
    own = [(k, Optional[t], _algo_default(k)) for k, t in keys.items() if k not in ("pairs", "reference")]
    pairs, reference = keys["pairs"], keys["reference"]
    return [("name", str, field(default="gpo")), *own,
            ("pairs", Optional[pairs], _algo_default("pairs")),  # the algorithm's pair strategy
            ("max_pairs", int, field(default=4)),  # pairs per prompt, at most
            ("min_prob", float, field(default=0.0)),  # margin filter: drop pairs with P(y_w > y_l) below this
            ("reference", Optional[reference], _algo_default("reference")),  # None: no reference model
            ("lpc", LpcSettings, field(default_factory=LpcSettings))]


# The algorithm (``name``: a unit of ``selfplay.algorithms``) and every unit's hyperparameters; an unset key is
# its algorithm's default (``ALGORITHM_DEFAULTS``), and another algorithm's key is refused by validation.
AlgoConfig = make_dataclass("AlgoConfig", _algo_fields())
AlgoConfig.__module__ = __name__


@dataclass
class LoraSettings:
    """LoRA adapters on the policy (PEFT; selfplay.policy.lora): only they train; rank 0 is a full fine-tune."""

    rank: int = 0
    alpha: float = 16.0  # the update is (alpha / rank) B A
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


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
    mixed_precision: str = "auto"  # auto (bf16 on a GPU, else no) | no | bf16 | fp16 (fp16: world_size 1 only)
    # Learner ranks (data parallel, FSDP2 shards; NCCL on GPU, gloo on CPU); 1: one process, no sharding.
    # train.batch_size is the global batch, split over the ranks.
    world_size: int = 1
    activation_checkpointing: bool = False  # world_size > 1: recompute each block's activations in backward
    cpu_offload: bool = False  # world_size > 1: keep the shards (and optimizer state) on the CPU
    lora: LoraSettings = field(default_factory=LoraSettings)
    num_cpus: float = 0.0  # Ray resources per learner rank
    num_gpus: float = 0.0


@dataclass
class SyncConfig:
    """Weights from the learner to the generators after each iteration (selfplay.policy.object_store_sync)."""

    bucket_mb: float = 256.0  # whole layers packed per transfer, up to this size (a larger layer goes alone)
    timeout_s: float = 600.0  # per bucket; the error names the generator (or learner rank) that did not answer
    # object_store (any device, across nodes) | nccl (GPU to GPU) | ipc (colocated, same GPU): vLLM's own transfer
    transport: str = "object_store"


@dataclass
class EvalConfig:
    prompts: int = 64  # held-out prompts per evaluation (at most data.eval_size)
    samples: int = 4  # responses per prompt and policy; win rates average over samples x samples pairs
    temperature: float = 1.0


@dataclass
class DirectionsConfig:
    """Preference directions (DPA, docs/methods.md §3), used with scorer.kind=multi_objective: each prompt is
    conditioned on a unit vector v over the reward model's attributes, written into its system prompt."""

    # Training, m = 2: theta ~ Uniform(angles) in degrees, v = <cos theta, sin theta> ([DPA]: -45..0).
    angles: list[float] = field(default_factory=lambda: [-45.0, 0.0])
    # Any m: uniform over the unit vectors within max_angle degrees of center (used instead of angles).
    center: Optional[list[float]] = None
    max_angle: float = 45.0
    fixed: Optional[list[float]] = None  # one direction for every prompt instead of sampling
    per_prompt: int = 1  # directions drawn per prompt each iteration ([DPA]: 5); K responses each
    # Evaluation: grid_size directions with angles evenly over grid_angles (m = 2; [DPA] fig. 4:
    # 10 from <1, 0> to <sqrt2/2, sqrt2/2>), or an explicit list in grid (any m).
    grid_size: int = 10
    grid_angles: list[float] = field(default_factory=lambda: [0.0, 45.0])
    grid: Optional[list[list[float]]] = None
    # Hypervolume reference point (one value per attribute, 0-100 scale); None: the origin.
    hv_reference: Optional[list[float]] = None


@dataclass
class PlacementConfig:
    """The devices the plan (``selfplay.config.memory``) checks a run against before any actor loads a model."""

    gpu_memory_gb: Optional[float] = None  # per GPU; None: the visible GPU's, or 80 where none is visible
    cpu_memory_gb: Optional[float] = None  # host memory for the CPU actors; None: this machine's
    check: bool = True  # refuse a run whose plan cannot fit
    # The learner ranks' placement group: PACK (as few nodes as possible) | SPREAD | STRICT_PACK | STRICT_SPREAD
    strategy: str = "PACK"
    # Node affinity per role: the name of a custom Ray resource (`ray start --resources='{"gen": 8}'`); each
    # actor of the role asks for 0.01 of it, so it runs only on nodes that offer it.  None: anywhere.
    generator_resource: Optional[str] = None
    scorer_resource: Optional[str] = None
    learner_resource: Optional[str] = None
    # Colocated: generators and learner share the GPUs (e.g. generator.num_gpus=0.5 train.num_gpus=0.5); the
    # generators sleep while the learner trains.  sleep_level 1: weights to host memory, KV cache dropped;
    # 2: weights dropped too, put back by the weight sync that follows waking.  vLLM needs a GPU for it.
    colocate: bool = False
    sleep_level: int = 1


@dataclass
class WandbSettings:
    project: Optional[str] = None  # set to log to W&B (WANDB_MODE=offline writes files without a network)
    entity: Optional[str] = None
    name: Optional[str] = None  # the W&B run's name; None: the run directory's


@dataclass
class MlflowSettings:
    uri: Optional[str] = None  # set to log to MLflow: a tracking server's URL, or file:/a/path
    experiment: str = "selfplay"


@dataclass
class LogConfig:
    """Where a run's metrics go besides metrics.jsonl (selfplay.core.loggers); a backend that fails warns once."""

    tensorboard: bool = True  # event files under RUN/tb/
    wandb: WandbSettings = field(default_factory=WandbSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    samples: int = 3  # held-out prompts whose pi_0 and pi_t responses are shown each iteration
    report: bool = True  # rewrite RUN/report.html (and report_files/) after each iteration
    # the most of the wall time the drawing (report, DPA's plots) may take, on its thread beside the stages
    report_share: float = 0.01


@dataclass
class RunSettings:
    dir: str = "runs/default"
    seed: int = 0
    resume: bool = False
    # Ray: None connects to RAY_ADDRESS / a running cluster if any, else starts a local one.
    ray_address: Optional[str] = None
    progress: bool = True
    # Stream the rollout: each chunk of generated prompts goes to the scorer at once, and is scored while the
    # next chunks generate (the same chunks as the staged run's, so the same rollout and metrics); false:
    # generate everything, then score
    stream: bool = False
    # Each stage's wait on the actors is bounded: a call that hangs counts as a failure of that actor (below),
    # named with the stage.  Seconds, generous for real models; stage_timeouts overrides stages by name
    # (TIMED_STAGES), e.g. {train: 86400}
    stage_timeout_s: float = 7200.0
    stage_timeouts: dict[str, float] = field(default_factory=dict)
    # Actor failures (a process that dies or hangs) a run survives: the actor is started again and its
    # unfinished calls made again, or the iteration again from the last checkpoint; one more stops the run
    # (resumable).  0: the first failure stops it.
    max_failures: int = 3


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
    sync: SyncConfig = field(default_factory=SyncConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    log: LogConfig = field(default_factory=LogConfig)


GENERATOR_BACKENDS = ("vllm", "hf")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # policy.dtype, generator.dtype
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
LR_SCHEDULES = ("constant", "linear", "cosine")
SYNC_TRANSPORTS = ("object_store", "nccl", "ipc")
TIMED_STAGES = ("start", "generate", "score", "train", "eval", "checkpoint")  # run.stage_timeouts' keys

# ``algo=NAME`` on the command line selects an algorithm with its defaults: ``algo.name=NAME``.
SHORTHANDS = {"algo": "algo.name"}
