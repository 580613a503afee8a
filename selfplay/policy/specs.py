"""What a generator and a learner are built from: one frozen object each, made from the run's config sections
(``GeneratorSpec.of`` / ``LearnerSpec.of``), instead of positional lists carried through every hop from
``selfplay.run`` to the engine."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from selfplay.algorithms.registry import resolve
from selfplay.core.lm import ModelTrust


def plain(section: DictConfig) -> DictConfig:
    """A config section as plain, resolved values (no interpolation left to the actor's process)."""
    return OmegaConf.create(OmegaConf.to_container(section, resolve=True))


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator's engine (``selfplay.policy.engines.make_generator``).  ``sleep_mode``: it will sleep and
    wake (colocated mode), which vLLM must be started for; ``weight_transfer``: vLLM's native transfer backend
    (nccl | ipc), None for the object store; ``code_bias``: LPC's codes are served (vLLM needs its logits
    processor for it); ``trust``: the policy's opt-ins.  The rest is ``generator.*``."""

    backend: str
    model: str
    tokenizer: str
    dtype: str
    seed: int
    batch_size: int
    gpu_memory_utilization: float
    enforce_eager: bool
    max_model_len: int
    chunked_prefill: bool
    tensor_parallel: int
    sleep_mode: bool
    weight_transfer: str | None
    code_bias: bool
    trust: ModelTrust

    @classmethod
    def of(cls, cfg: DictConfig, model: str, tokenizer: str) -> GeneratorSpec:
        """The run's generator serving ``model`` (pi_0 or a checkpoint) with ``tokenizer``.  Whether LPC's codes
        are served is the algorithm unit's trait (``coded``), not a key."""
        g = cfg.generator
        return cls(g.backend, model, tokenizer, g.dtype or cfg.policy.dtype, cfg.run.seed, g.batch_size,
                   g.gpu_memory_utilization, g.enforce_eager, g.max_model_len, g.chunked_prefill, g.tensor_parallel,
                   cfg.placement.colocate, None if cfg.sync.transport == "object_store" else cfg.sync.transport,
                   resolve(cfg.algo).coded, ModelTrust.of(cfg.policy))


@dataclass(frozen=True)
class LearnerSpec:
    """The learner (``selfplay.policy.trainer.PolicyTrainer``): the weights to train from (``model``, with
    ``tokenizer``), the run's pi_0 (``initial``, default ``model``: the reference of algorithms that keep one),
    the ``train`` and ``algo`` sections, the run's ``seed`` and ``iterations`` (over which LPC's g may rise), the
    policy's opt-ins (``trust``)."""

    model: str
    tokenizer: str
    dtype: str
    train: DictConfig
    algo: DictConfig
    seed: int
    initial: str | None = None
    iterations: int = 1
    trust: ModelTrust = ModelTrust()

    @classmethod
    def of(cls, cfg: DictConfig, model: str, tokenizer: str, initial: str | None) -> LearnerSpec:
        return cls(model, tokenizer, cfg.policy.dtype, plain(cfg.train), plain(cfg.algo), cfg.run.seed, initial,
                   cfg.iter, ModelTrust.of(cfg.policy))
