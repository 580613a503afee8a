"""What the generator engines may load (issue 17): the policy's opt-ins reach vLLM's engine arguments."""

from __future__ import annotations

from dataclasses import replace

import pytest
from omegaconf import OmegaConf

from selfplay.config.schema import Config
from selfplay.core.lm import ModelTrust
from selfplay.policy.specs import GeneratorSpec


def engine_spec(model: str, tokenizer: str, backend: str = "vllm", **changes) -> GeneratorSpec:
    """A generator of ``model`` with the schema's ``generator.*`` defaults, float32, seed 0, and ``changes``."""
    spec = GeneratorSpec.of(OmegaConf.structured(Config), model, tokenizer)
    return replace(spec, backend=backend, dtype="float32", seed=0, **changes)


def test_vllm_loads_safetensors_and_no_code_unless_the_policy_opts_in(monkeypatch):
    import vllm

    from selfplay.policy.engines import VLLMGenerator

    class Started(Exception):
        """Raised by the stand-in engine once it has its arguments: nothing is loaded."""

    seen = []

    def engine(**kwargs):
        seen.append((kwargs["trust_remote_code"], kwargs["load_format"]))
        raise Started

    monkeypatch.setattr(vllm, "LLM", engine)
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE"):  # set by the engine; restored after
        monkeypatch.setenv(name, "0" if name.endswith("MULTIPROCESSING") else "1")
    for trust in (ModelTrust(), ModelTrust(trust_remote_code=True), ModelTrust(allow_pickle=True)):
        with pytest.raises(Started):
            VLLMGenerator(engine_spec("policy", "tokenizer", trust=trust))
    assert seen == [(False, "safetensors"), (True, "safetensors"), (False, "auto")]
