"""What the generator engines may load (issue 17): the policy's opt-ins reach vLLM's engine arguments."""

from __future__ import annotations

import pytest

from selfplay.core.lm import ModelTrust


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
            VLLMGenerator("policy", "tokenizer", "float32", 0.3, True, 512, 0, trust=trust)
    assert seen == [(False, "safetensors"), (True, "safetensors"), (False, "auto")]
