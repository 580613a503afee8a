"""What each actor of a run needs in memory, from the config and the models' Hugging Face configs alone (no
weights), and whether that fits the devices it gets: ``python -m selfplay.plan`` prints it, and
``selfplay.run`` refuses a plan that cannot fit before any actor loads a model.

The estimates (bytes):
- learner, per rank: the trainable weights, their gradients and AdamW's two moments, each sharded over
  ``train.world_size`` ranks (FSDP2; one rank holds it all).  In ``policy.dtype`` for weights and gradients,
  fp32 for the moments: 16 bytes a parameter in float32, as in a bf16 mixed-precision recipe with fp32 master
  weights.  Plus the frozen reference (DPO/IPO against pi_0), sharded likewise, and activations: with
  ``train.activation_checkpointing`` each block keeps its input (2 s b h bytes in 16-bit, 4 in 32) and one block
  is live in full; without it every block keeps about 17 s b h values (Korthikanti et al. 2022, eq. 2 with
  attention by a fused kernel), and the logits take 4 s b V bytes; s = ``generator.max_model_len`` (the bound),
  b = ``train.micro_batch_size`` sequences (two per pair).  ``train.cpu_offload`` moves the sharded states to
  the CPU; the GPU keeps two blocks gathered whole and the activations.
  With LoRA (``train.lora.rank``): the frozen weights, and weights, gradients and moments (fp32) of the
  adapters only, r (in + out) parameters per target layer; no reference copy (pi_0 is the base).
- generator: its weights over ``generator.tensor_parallel`` devices; on a GPU vLLM takes
  ``generator.gpu_memory_utilization`` of it and the weights must fit in that with room for a KV cache.
- scorer: its weights in ``scorer.dtype`` (auto: bfloat16 on a GPU, float32 on the CPU) and the activations of
  ``scorer.batch_size`` sequences.
- with ``sync.transport=nccl|ipc``, learner and generator each hold vLLM's two transfer buffers of
  ``sync.bucket_mb`` on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import DictConfig

from selfplay.models import judge_dtype

GB = 1e9
LEARNER_FIX = ("raise train.world_size, set train.cpu_offload=true, train.lora.rank or "
               "train.activation_checkpointing=true, or lower train.micro_batch_size")
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a model, read from its Hugging Face config (parameters counted on the meta device)."""

    params: int
    layers: int
    hidden: int
    vocab: int
    kv_heads: int
    head_dim: int
    linears: tuple[tuple[str, int, int], ...] = ()  # (module name's last part, in, out) of every linear layer

    def lora_params(self, rank: int, targets: list[str]) -> int:
        """Parameters of rank-``rank`` adapters on the ``targets``: r (in + out) each (A is r x in, B out x r)."""
        return sum(rank * (i + o) for name, i, o in self.linears if name in targets)

    @classmethod
    def of(cls, source: str, causal_lm: bool = True, trust_remote_code: bool = False) -> "ModelShape":
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        from selfplay.core.lm import resolve

        config = AutoConfig.from_pretrained(resolve(source), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(
                config, trust_remote_code=trust_remote_code)
        text = getattr(config, "text_config", config)
        heads = text.num_attention_heads
        linears = tuple((name.rsplit(".", 1)[-1], m.in_features, m.out_features)
                        for name, m in model.named_modules() if isinstance(m, torch.nn.Linear))
        return cls(sum(p.numel() for p in model.parameters()), text.num_hidden_layers, text.hidden_size,
                   text.vocab_size, getattr(text, "num_key_value_heads", None) or heads,
                   getattr(text, "head_dim", None) or text.hidden_size // heads, linears)


@dataclass
class Need:
    """One actor's needs, in bytes, by part; ``device`` is where they live (``cuda`` or ``cpu``)."""

    role: str
    count: int
    device: str
    parts: dict[str, float] = field(default_factory=dict)
    capacity: float = math.inf  # bytes available to it on that device
    cpu_parts: dict[str, float] = field(default_factory=dict)  # what it keeps in host memory (offload)
    fix: str = ""  # what to change when it does not fit

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def transfer_buffers(cfg: DictConfig) -> dict[str, float]:
    """vLLM's weight transfer (``sync.transport=nccl|ipc``) packs into two buffers of ``sync.bucket_mb`` on each
    side, on the GPU; the object store's buckets sit in host memory."""
    if cfg.sync.transport == "object_store":
        return {}
    return {"transfer buffers": 2 * cfg.sync.bucket_mb * 2**20}


def learner_need(cfg: DictConfig, policy: ModelShape) -> Need:
    t, n = cfg.train, policy.params
    w = BYTES[cfg.policy.dtype]
    if t.lora.rank > 0:  # frozen base; gradients and moments for the adapters; pi_0 is the base (no copy)
        a = policy.lora_params(t.lora.rank, list(t.lora.target_modules)) / t.world_size
        states = {"weights": w * n / t.world_size, "adapters": 4 * a, "gradients": 4 * a, "optimizer": 8 * a}
    else:
        states = {"weights": w * n / t.world_size, "gradients": w * n / t.world_size,
                  "optimizer": 8 * n / t.world_size}
        if cfg.algo.reference == "initial":
            states["reference"] = w * n / t.world_size
    seqs = t.micro_batch_size * (2 if cfg.algo.pairs not in (None, "all") else 1)
    device = "cuda" if t.num_gpus > 0 else "cpu"
    half = t.mixed_precision in ("bf16", "fp16") or (t.mixed_precision == "auto" and device == "cuda")
    s, h, act_bytes = cfg.generator.max_model_len, policy.hidden, 2 if half else w
    if t.activation_checkpointing:
        activations = act_bytes * s * seqs * h * (policy.layers + 17)
    else:
        activations = act_bytes * 17 * s * seqs * h * policy.layers
    parts = {"activations": activations + 4 * s * seqs * policy.vocab, **transfer_buffers(cfg)}
    if t.cpu_offload and device == "cuda":
        parts["gathered blocks"] = 2 * w * n / policy.layers
        return Need("learner rank", t.world_size, device, parts, cpu_parts=states, fix=LEARNER_FIX)
    fix = "set train.activation_checkpointing=true or lower train.micro_batch_size" if t.lora.rank else LEARNER_FIX
    return Need("learner rank", t.world_size, device, {**states, **parts}, fix=fix)


def generator_need(cfg: DictConfig, policy: ModelShape) -> Need:
    g = cfg.generator
    w = BYTES[g.dtype or cfg.policy.dtype]
    weights = w * policy.params / g.tensor_parallel
    kv_per_token = 2 * policy.layers * policy.kv_heads * policy.head_dim * w / g.tensor_parallel
    return Need("generator", g.replicas * g.tensor_parallel, "cuda" if g.num_gpus > 0 else "cpu",
                {"weights": weights, "KV cache (one full sequence)": kv_per_token * g.max_model_len,
                 **transfer_buffers(cfg)},
                fix="raise generator.tensor_parallel or generator.gpu_memory_utilization, or serve generator.dtype=bfloat16")


def scorer_need(cfg: DictConfig, scorer: ModelShape) -> Need:
    s = cfg.scorer
    device = "cuda" if s.num_gpus > 0 else "cpu"
    w = BYTES[judge_dtype(s.dtype, device)]
    length = cfg.generator.max_model_len
    if s.kind == "pairrm":  # source and two candidates: up to 1224 + 2 x 412 tokens, whatever the generator writes
        from selfplay.models.pairrm import HF_LENGTHS

        length = HF_LENGTHS[0] + 2 * HF_LENGTHS[1]
    activations = 4 * s.batch_size * length * scorer.hidden * 4
    return Need("scorer", 1, device, {"weights": w * scorer.params, "activations": activations},
                fix="give the scorer a larger share (scorer.num_gpus) or lower scorer.batch_size")


def with_capacity(needs: list[Need], cfg: DictConfig, gpu_bytes: float, cpu_bytes: float) -> list[Need]:
    """Each need with the memory its device gives it: its share of a GPU (vLLM: gpu_memory_utilization of it),
    or the host's memory (shared by every CPU actor: checked on their sum, ``problems``)."""
    shares = {"learner rank": cfg.train.num_gpus, "generator": cfg.generator.num_gpus, "scorer": cfg.scorer.num_gpus}
    if cfg.placement.colocate:  # the generators sleep while the learner trains: it has the whole device then
        shares["learner rank"] = 1.0
    for need in needs:
        if need.device == "cuda":
            share = min(shares[need.role], 1.0)
            if need.role == "generator":
                share *= cfg.generator.gpu_memory_utilization
            need.capacity = share * gpu_bytes
        else:
            need.capacity = cpu_bytes
    return needs


RESIDENT = ("weights", "adapters", "gradients", "optimizer", "reference")  # what a learner keeps between steps


def problems(needs: list[Need], cfg: DictConfig, gpu_bytes: float, cpu_bytes: float) -> list[str]:
    """What cannot fit, each with what to change; empty when the plan fits.  Colocated (``placement.colocate``),
    the learner's resident states stay on the GPU while the generators run beside them."""
    out = []
    for need in needs:
        if need.device == "cuda" and need.total > need.capacity:
            out.append(f"a {need.role} needs {size(need.total)} on its GPU, which gives it "
                       f"{size(need.capacity)} ({describe(need.parts)}): {need.fix}")
    if cfg.placement.colocate:
        learner = next(n for n in needs if n.role == "learner rank")
        resident = sum(v for k, v in learner.parts.items() if k in RESIDENT)
        engine = cfg.generator.gpu_memory_utilization * gpu_bytes
        if learner.device == "cuda" and resident + engine > gpu_bytes:
            out.append(f"colocated, a learner rank keeps {size(resident)} on its GPU while the generators run there "
                       f"with {size(engine)} (generator.gpu_memory_utilization={cfg.generator.gpu_memory_utilization}"
                       f" of {size(gpu_bytes)}): lower generator.gpu_memory_utilization, raise train.world_size or "
                       "set train.cpu_offload=true")
    on_cpu = sum(n.count * n.total for n in needs if n.device == "cpu") + sum(
        n.count * sum(n.cpu_parts.values()) for n in needs)
    if on_cpu > cpu_bytes:
        out.append(f"the actors on the CPU need {size(on_cpu)} of host memory, this machine has "
                   f"{size(cpu_bytes)}: put actors on GPUs (train.num_gpus, generator.num_gpus, scorer.num_gpus) "
                   "or use smaller models")
    return out


def size(b: float) -> str:
    return f"{b / GB:.1f} GB" if b >= GB else f"{b / 1e6:.0f} MB"


def describe(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {size(v)}" for k, v in parts.items())


class PlanError(ValueError):
    """A model whose Hugging Face config cannot be read for the plan."""


def device_memory(cfg: DictConfig) -> tuple[float, float]:
    """(bytes per GPU, bytes of host memory): ``placement.*_memory_gb``, else the visible GPU's (80 GB where none is
    visible) and this machine's."""
    import os

    import torch

    p = cfg.placement
    if p.gpu_memory_gb is not None:
        gpu = p.gpu_memory_gb * GB
    else:
        gpu = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 80 * GB
    cpu = p.cpu_memory_gb * GB if p.cpu_memory_gb is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return float(gpu), float(cpu)


def plan(cfg: DictConfig, policy: str, scorer: str) -> tuple[list[Need], list[str]]:
    """Every actor's needs against its device, and what cannot fit (empty when the plan fits).  A model whose
    config needs its own code is read only with ``{role}.trust_remote_code``."""
    shapes = {}
    if cfg.scorer.kind == "pairrm":
        from selfplay.models.pairrm import backbone_source

        scorer = backbone_source(scorer, cfg.scorer.tokenizer)
    for role, source, causal in (("policy", policy, True), ("scorer", scorer, False)):
        trusted = cfg[role].trust_remote_code
        try:
            shapes[role] = ModelShape.of(source, causal, trusted)
        except Exception as e:  # noqa: BLE001 (any failure to read a config is reported the same way)
            if not trusted and "trust_remote_code" in str(e):  # transformers' refusal, naming its argument
                raise PlanError(f"{role} model '{source}' ships its own Python code, needed to read its config; "
                                f"selfplay does not run a model's code unless asked: set {role}.trust_remote_code=true "
                                "if you trust it") from e
            raise PlanError(f"cannot read the Hugging Face config of the {role} '{source}': {e}") from e
    gpu, cpu = device_memory(cfg)
    needs = with_capacity([learner_need(cfg, shapes["policy"]), generator_need(cfg, shapes["policy"]),
                           scorer_need(cfg, shapes["scorer"])], cfg, gpu, cpu)
    return needs, problems(needs, cfg, gpu, cpu)


def table(needs: list[Need]) -> str:
    """The plan as a text table: each actor, how many, its device, its needs by part and the memory it gets."""
    rows = [f"{'actor':<14} {'count':>5} {'device':<6} {'needs':>9} {'gets':>9}  parts"]
    for n in needs:
        gets = "host" if n.device == "cpu" else size(n.capacity)
        parts = describe(n.parts) + (f"; on the CPU: {describe(n.cpu_parts)}" if n.cpu_parts else "")
        rows.append(f"{n.role:<14} {n.count:>5} {n.device:<6} {size(n.total):>9} {gets:>9}  {parts}")
    return "\n".join(rows)
