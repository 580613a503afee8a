"""The GPU figures, in one run that writes one JSON file (issue 29, part 5); ``bench/gpu.sh`` runs the ``gpu``
tests first and then this.

    bash bench/gpu.sh [OUT.json]                       # on a GPU machine (at most 10 minutes on one H200)
    python bench/gpu.py --cpu-check --out /tmp/g.json  # the same code at a tiny shape on the CPU

Every model is a random Llama of a published shape (``SHAPES``: Llama-3.2-1B's and Llama-2-7B's layers) over the
embedded world's tokenizer, saved once in bf16, loaded by the run's own classes:

- **learner MFU** (1B, bf16 mixed precision): ``PolicyTrainer.train_epoch`` over a GPO batch of
  ``--sequences`` sequences of ``--tokens`` tokens; model FLOPs 6 N T (N the parameters in matmuls, T the
  tokens) over the epoch's seconds and the device's dense bf16 peak (``PEAK_BF16``, by device name);
- **vLLM generation** (1B, bf16): ``--prompts`` prompts x 4 samples of up to 256 new tokens: tokens / s;
- **sleep and wake** (1B): ``sleep(1)``, ``wake_up()``, ``sleep(2)``, ``wake_up()``, each timed;
- **IPC weight transfer** (1B and 7B): the learner's rank 0 sends its weights to a generator on the same GPU
  over vLLM's IPC transfer (``sync.transport=ipc``); the median of 3 sends.

With ``--cpu-check`` the shapes are tiny, the weights float32 and vLLM runs on the CPU; what needs CUDA (sleep
mode, IPC) is written as skipped with the reason, and MFU as None (no peak is known for a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

SHAPES = {  # (hidden, MLP, layers, heads, KV heads)
    "1b": (2048, 8192, 16, 32, 8),
    "7b": (4096, 11008, 32, 32, 32),
    "tiny": (128, 256, 2, 2, 2),
}
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}  # dense, FLOP/s


def random_llama(shape: str, tokenizer: str, path: Path, dtype: torch.dtype) -> int:
    """A random Llama of ``shape`` saved at ``path`` with ``tokenizer``; its parameters in matmuls (not the
    embedding's rows)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfplay.core.lm import load_tokenizer

    hidden, mlp, layers, heads, kv = SHAPES[shape]
    tok = load_tokenizer(tokenizer)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, head_dim=hidden // heads,
                         max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return params


def gpo_batch(sequences: int, tokens: int, vocab: int):
    """``sequences`` GPO examples (all-K form), each a prompt of tokens // 4 and a response of the rest."""
    from selfplay.core.batch import Batch

    g = torch.Generator().manual_seed(0)
    prompt = tokens // 4
    ids = [torch.randint(3, vocab, (tokens,), generator=g).tolist() for _ in range(sequences)]
    return Batch.examples([f"1/{i}" for i in range(sequences)], [x[:prompt] for x in ids], [x[prompt:] for x in ids],
                          torch.linspace(-1, 1, sequences), 1, "previous")


def learner(model: str, dtype: str, micro_batch: int, sequences: int):
    from omegaconf import OmegaConf

    from selfplay.config.loading import load_config
    from selfplay.config.schema import TrainConfig
    from selfplay.policy.specs import LearnerSpec
    from selfplay.policy.trainer import PolicyTrainer

    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {
        "epochs": 1, "batch_size": sequences, "micro_batch_size": micro_batch,
        "mixed_precision": "bf16" if torch.cuda.is_available() else "no"})
    return PolicyTrainer(LearnerSpec(model, model, dtype, cfg, load_config([]).algo, seed=0))


def peak_flops() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((v for k, v in PEAK_BF16.items() if k in name), None)


def learner_mfu(model: str, params: int, dtype: str, vocab: int, args) -> dict:
    trainer = learner(model, dtype, args.micro_batch, args.sequences)
    trainer.begin_iteration(gpo_batch(args.sequences, args.tokens, vocab))
    trainer.train_epoch(0, iteration=1)  # warm-up: kernels, allocator
    sync()
    start = time.perf_counter()
    trainer.train_epoch(1, iteration=1)
    sync()
    seconds = time.perf_counter() - start
    device, peak = peak_flops()
    achieved = 6 * params * args.sequences * args.tokens / seconds
    del trainer
    return {"device": device, "params": params, "tokens": args.sequences * args.tokens, "epoch_s": round(seconds, 3),
            "tflops": round(achieved / 1e12, 2), "peak_tflops": peak and peak / 1e12,
            "mfu": None if peak is None else round(achieved / peak, 4)}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def engine_spec(model: str, dtype: str, **changes):
    from omegaconf import OmegaConf

    from selfplay.config.schema import Config
    from selfplay.policy.specs import GeneratorSpec

    spec = GeneratorSpec.of(OmegaConf.structured(Config), model, model)
    return replace(spec, backend="vllm", dtype=dtype, seed=0, max_model_len=1024, **changes)


def timed(ref) -> float:
    import ray

    start = time.perf_counter()
    ray.get(ref)
    return round(time.perf_counter() - start, 3)


def generation_and_sleep(model: str, dtype: str, args) -> dict:
    import ray

    from actors.generator import GenerationWorker

    gpu = torch.cuda.is_available()
    gen = GenerationWorker.options(num_gpus=1 if gpu else 0).remote(
        engine_spec(model, dtype, sleep_mode=gpu, gpu_memory_utilization=0.5))
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 500, (64,), generator=g).tolist() for _ in range(args.prompts)]
    ray.get(gen.generate.remote(prompts[:4], 1, 1.0, 1.0, 8, 0))  # warm-up
    start = time.perf_counter()
    groups = ray.get(gen.generate.remote(prompts, 4, 1.0, 1.0, args.new_tokens, 0))
    seconds = time.perf_counter() - start
    tokens = sum(len(s.response_ids) for group in groups for s in group)
    out = {"generation": {"prompts": args.prompts, "samples": 4, "new_tokens": tokens, "s": round(seconds, 3),
                          "tokens_per_s": round(tokens / seconds, 1)}}
    if gpu:
        out["sleep"] = {f"{verb}_level{level}_s": timed(gen.sleep.remote(level) if verb == "sleep" else gen.wake_up.remote())
                        for level in (1, 2) for verb in ("sleep", "wake")}
    else:
        out["sleep"] = {"skipped": "vLLM's sleep mode needs CUDA"}
    ray.kill(gen)
    return out


def ipc_transfer(model: str, dtype: str) -> dict:
    """The learner (in this process) sends its weights to a generator on the same GPU over IPC: 3 sends."""
    import ray

    from actors.generator import GenerationWorker, GeneratorsClient

    if not torch.cuda.is_available():
        return {"skipped": "vLLM's IPC weight transfer needs CUDA"}
    gen = GenerationWorker.options(num_gpus=0.5).remote(
        engine_spec(model, dtype, weight_transfer="ipc", gpu_memory_utilization=0.35))
    trainer = learner(model, dtype, 1, 1)
    trainer.connect_generators("ipc", GeneratorsClient([gen], 1, 600.0), 1, 2**30, None, getattr(torch, dtype))
    sends = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        trainer.send_weights()
        sends.append(time.perf_counter() - start)
    ray.kill(gen)
    del trainer
    torch.cuda.empty_cache()
    return {"send_s": [round(s, 3) for s in sends], "median_s": round(statistics.median(sends), 3)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/gpu.json")
    ap.add_argument("--cpu-check", action="store_true", help="tiny shapes on the CPU: the code paths, no figures")
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--tests-log", default=None, help="the gpu tests' output (bench/gpu.sh): its last line is kept")
    args = ap.parse_args(argv)
    if not args.cpu_check and not torch.cuda.is_available():
        print("error: no CUDA device: bench/gpu.py measures a GPU (--cpu-check runs its code on the CPU)",
              file=sys.stderr)
        return 2
    import ray
    from omegaconf import OmegaConf

    from selfplay.config.schema import WorldConfig
    from selfplay.core.lm import load_tokenizer
    from selfplay.world.build import get_world

    world = get_world(OmegaConf.structured(WorldConfig))
    small, large = ("tiny", "tiny") if args.cpu_check else ("1b", "7b")
    dtype = "float32" if args.cpu_check else "bfloat16"
    result: dict = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(["python bench/gpu.py", *argv])}
    if args.tests_log:
        lines = Path(args.tests_log).read_text().strip().splitlines()
        result["gpu_tests"] = lines[-1] if lines else "no output"
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths, params = {}, {}
            for shape in dict.fromkeys((small, large)):
                paths[shape] = Path(tmp) / shape
                params[shape] = random_llama(shape, world.tokenizer, paths[shape], getattr(torch, dtype))
            result["learner"] = learner_mfu(str(paths[small]), params[small], "float32",
                                           len(load_tokenizer(world.tokenizer)), args)
            result.update(generation_and_sleep(str(paths[small]), dtype, args))
            result["ipc"] = {shape: ipc_transfer(str(paths[shape]), dtype) for shape in dict.fromkeys((small, large))}
    finally:
        ray.shutdown()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
