"""Sampling K responses per prompt: a vLLM engine, or transformers' generate (same interface).

Both take prompt token ids (already chat-templated) and return token ids plus
text, so the learner scores exactly the tokens that were sampled.  With vLLM,
sample j of prompt i uses the seed ``seed + i * n + j``: results do not depend on
how the prompts are sharded across replicas or batched.  transformers samples a
whole batch from one generator seeded per batch, so its results are reproducible
for the same seed, ``generator.batch_size`` and ``generator.replicas``.

Weights arrive in place, in buckets of Hugging Face-named tensors (``load_bucket``, then ``finish_sync``;
``selfplay.policy.object_store_sync``); the engine is never restarted.  ``engine_starts`` counts the
starts (one per generator per run).

In colocated mode (``placement.colocate``) the engine sleeps while the learner trains (``sleep``, then
``wake_up``): level 1 moves the weights to host memory and drops the KV cache, level 2 drops the weights as
well, which only the weight sync that follows waking puts back (and it resets the prefix cache).
"""

from __future__ import annotations

import logging
import os
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from selfplay.core.batch import Sample
from selfplay.core.lm import load_causal_lm, load_tokenizer, resolve
from selfplay.policy.object_store_sync import Bucket
from selfplay.policy.specs import GeneratorSpec
from selfplay.policy.tensor_parallel import bind_cpu_workers
from selfplay.policy.verbs import GenerationEngine

log = logging.getLogger(__name__)


CODE_WEIGHTS = "lpc_code_weights"  # SamplingParams.extra_args key: a request's LPC code weights c
CODE_TABLE: dict[str, torch.Tensor] = {}  # "table": this process's engine's W E, (C, V)


def code_bias_processor() -> type:
    """LPC in vLLM: a v1 logits processor adding c @ W E to the logits of each request that carries code weights
    c (``CODE_WEIGHTS``); W E is set by ``VLLMGenerator.set_code_table``.  A request brings C numbers, the
    engine one (B, C) x (C, V) product a step: a dense per-request ``logit_bias`` of V entries cost 9x the
    generation time on a 128k vocabulary, these weights 1.5x (``bench/lpc_bias.py``, a 128-wide model)."""
    from vllm.v1.sample.logits_processor import LogitsProcessor
    from vllm.v1.sample.logits_processor.builtin import process_dict_updates

    class CodeBias(LogitsProcessor):
        def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
            self.device = device
            self.weights: dict[int, list[float]] = {}  # batch row -> c
            self.rows: torch.Tensor | None = None
            self.matrix: torch.Tensor | None = None
            self.leading = False
            self.source: torch.Tensor | None = None  # the CODE_TABLE table last seen, and its copy on the device
            self.table: torch.Tensor | None = None

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update) -> None:
            if process_dict_updates(self.weights, batch_update,
                                    lambda params, _, __: (params.extra_args or {}).get(CODE_WEIGHTS)):
                rows = list(self.weights)
                self.leading = rows == list(range(len(rows)))  # the batch's first rows, in order
                self.rows = torch.tensor(rows, dtype=torch.long, device=self.device)
                self.matrix = torch.tensor(list(self.weights.values()), dtype=torch.float32, device=self.device)

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            if self.weights:
                if self.source is not CODE_TABLE["table"]:  # a new table (after a training): copied over once
                    self.source = CODE_TABLE["table"]
                    self.table = self.source.to(logits.device)
                shift = (self.matrix @ self.table[:, :logits.shape[-1]]).to(logits.dtype)
                if self.leading and len(self.weights) == logits.shape[0]:
                    logits += shift  # every row carries codes (an LPC run): in place, no gather and scatter
                else:
                    logits[self.rows] += shift
            return logits

    return CodeBias


class VLLMGenerator:
    """vLLM in the calling process (V1 multiprocessing off), so weights can be loaded in place; implements
    ``selfplay.policy.verbs.TransferEngine``."""

    def __init__(self, spec: GeneratorSpec):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.is_cpu():  # vLLM's default binding wants a NUMA node per rank
            bind_cpu_workers(spec.tensor_parallel)

        t, trust = time.perf_counter(), spec.trust
        self.llm = LLM(model=resolve(spec.model), tokenizer=resolve(spec.tokenizer), dtype=spec.dtype, seed=spec.seed,
                       enforce_eager=spec.enforce_eager, gpu_memory_utilization=spec.gpu_memory_utilization,
                       max_model_len=spec.max_model_len, enable_chunked_prefill=spec.chunked_prefill,
                       tensor_parallel_size=spec.tensor_parallel, enable_sleep_mode=spec.sleep_mode,
                       **({"weight_transfer_config": {"backend": spec.weight_transfer}}
                          if spec.weight_transfer else {}),
                       **({"logits_processors": [code_bias_processor()]} if spec.code_bias else {}),
                       # the policy's opt-ins: its own code; pickle weights (auto: safetensors first, else *.bin/*.pt)
                       trust_remote_code=trust.trust_remote_code,
                       load_format="auto" if trust.allow_pickle else "safetensors")
        self.tensor_parallel = spec.tensor_parallel
        self.engine_starts = 1
        self.eos_id = self.llm.get_tokenizer().eos_token_id
        log.info("vLLM engine started in %.1fs (start #%d)", time.perf_counter() - t, self.engine_starts)

    def generate(self, prompt_ids: list[list[int]], n: int, temperature: float, top_p: float,
                 max_new_tokens: int, seed: int, codes: torch.Tensor | None = None) -> list[list[Sample]]:
        """``codes``: LPC's code weights per prompt (P, C), which ``CodeBias`` turns into c @ W E."""
        from vllm import SamplingParams

        requests, params = [], []
        for i, ids in enumerate(prompt_ids):
            extra = None if codes is None else {CODE_WEIGHTS: codes[i].tolist()}
            for j in range(n):
                requests.append({"prompt_token_ids": ids})
                params.append(SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                             seed=seed + i * n + j, skip_special_tokens=True, extra_args=extra))
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        flat = []
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            finished = c.finish_reason == "stop"
            if finished and (not ids or ids[-1] != self.eos_id):
                ids.append(self.eos_id)  # vLLM drops the stop token from token_ids in some versions
            flat.append(Sample(ids, c.text, finished))
        return [flat[i * n:(i + 1) * n] for i in range(len(prompt_ids))]

    def load_bucket(self, bucket: Bucket) -> None:
        """Load one bucket of HF-named tensors (whole decoder layers, ``object_store_sync``) into the running engine.

        vLLM's in-place reload (``reload_weights``, checkpoint format) maps q/k/v and gate/up onto its fused
        parameters and re-runs the post-load processing (e.g. CPU weight repacking) of each layer whose weights
        all arrived; calling ``model.load_weights`` directly fails once that processing has replaced the
        parameters.  Layers outside the bucket keep their weights (vLLM warns about each; silenced here).
        """
        # In this process (one device) the iterator is read in place; worker processes (tensor parallel) get a list.
        weights = bucket.tensors() if self.tensor_parallel == 1 else list(bucket.tensors())
        quiet = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        finally:
            quiet.setLevel(level)

    def finish_sync(self) -> None:
        """After the last bucket: drop the prefix cache, whose KV entries came from the old weights."""
        self.llm.reset_prefix_cache()

    def set_code_table(self, table: torch.Tensor) -> None:
        """LPC: W E (C, V) for ``CodeBias``, which runs in this process (the engine does, tensor_parallel = 1)."""
        CODE_TABLE["table"] = table.float()

    # vLLM's native weight transfer (``sync.transport=nccl|ipc``, ``selfplay.policy.vllm_transfer``): the
    # learner's rank 0 drives these four through ``GeneratorsClient``.
    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, update_info: dict | list) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self) -> None:
        self.llm.finish_weight_update()
        self.finish_sync()

    def sleep(self, level: int) -> None:
        """vLLM's sleep mode (the engine must have been started with ``sleep_mode``): frees the device memory."""
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        self.llm.wake_up()


class AddBias(LogitsProcessor):
    """Adds row i's bias (V,) to row i's next-token scores: LPC's W z (``selfplay.policy.lpc.logit_bias``)."""

    def __init__(self, biases: torch.Tensor):
        self.biases = biases

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + self.biases[:, :scores.shape[-1]].to(scores.dtype)


class HFGenerator:
    """transformers' generate, batched; faster than vLLM for tiny models on CPU; implements
    ``selfplay.policy.verbs.GenerationEngine``."""

    def __init__(self, spec: GeneratorSpec):
        self.model = load_causal_lm(spec.model, spec.dtype, spec.trust).eval()
        self.tokenizer = load_tokenizer(spec.tokenizer, spec.trust)
        self.batch_size = spec.batch_size
        self.engine_starts = 1
        self.asleep: dict[int, torch.Size] = {}  # level 2: each dropped tensor's shape, by id
        self.home = torch.device("cpu")
        self.code_table: torch.Tensor | None = None  # LPC: W E, (C, V)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], n: int, temperature: float, top_p: float,
                 max_new_tokens: int, seed: int, codes: torch.Tensor | None = None) -> list[list[Sample]]:
        """``codes``: LPC's code weights c per prompt (P, C): each step's logits get c @ W E (``set_code_table``),
        which is z = sum_k c_k e_k added to the final state."""
        tok = self.tokenizer
        flat_prompts = [ids for ids in prompt_ids for _ in range(n)]
        biases = None if codes is None else (codes.float() @ self.code_table).repeat_interleave(n, 0)
        samples: list[Sample] = []
        for start in range(0, len(flat_prompts), self.batch_size):
            chunk = flat_prompts[start:start + self.batch_size]
            shift = [] if biases is None else [AddBias(biases[start:start + len(chunk)])]
            # Left-pad so generation continues every prompt from its last token.
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            torch.manual_seed(seed + start)
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=temperature > 0,
                                      temperature=temperature if temperature > 0 else None, top_p=top_p,
                                      max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, top_k=None,
                                      logits_processor=LogitsProcessorList(shift))
            for row in out[:, width:].tolist():
                if tok.eos_token_id in row:
                    row = row[:row.index(tok.eos_token_id) + 1]
                    finished = True
                else:
                    finished = False
                samples.append(Sample(row, tok.decode(row, skip_special_tokens=True), finished))
        return [samples[i * n:(i + 1) * n] for i in range(len(prompt_ids))]

    @torch.no_grad()
    def load_bucket(self, bucket: Bucket) -> None:
        """Copy one bucket's tensors into the model's parameters and buffers, by Hugging Face name."""
        state = self.model.state_dict()
        for name, t in bucket.tensors():
            if name not in state:
                raise KeyError(f"weight sync: the generator's model has no tensor '{name}'")
            state[name].copy_(t)

    def finish_sync(self) -> None:
        pass

    def set_code_table(self, table: torch.Tensor) -> None:
        """LPC: W E, each code's logit shift (C, V), from the learner after each training."""
        self.code_table = table.float()

    def _checkpoint_tensors(self) -> list[torch.Tensor]:
        """The weights a checkpoint (and the weight sync) carries, each once (tied weights share one)."""
        unique = {id(t): t for t in self.model.state_dict(keep_vars=True).values()}
        return list(unique.values())

    def sleep(self, level: int) -> None:
        """Level 1: the weights to host memory (where they already are on a CPU).  Level 2: drop them; buffers
        outside the checkpoint (rotary frequencies) stay, since the weight sync does not carry them."""
        self.home = next(self.model.parameters()).device
        if level == 1:
            self.model.to("cpu")
            return
        for t in self._checkpoint_tensors():
            self.asleep[id(t)] = t.shape
            t.data = torch.empty(0, dtype=t.dtype, device=t.device)

    def wake_up(self) -> None:
        """Back on the model's device; after level 2 the weights are uninitialised until the next sync."""
        for t in self._checkpoint_tensors():
            if id(t) in self.asleep:
                t.data = torch.empty(self.asleep[id(t)], dtype=t.dtype, device=t.device)
        self.asleep.clear()
        self.model.to(self.home)


def make_generator(spec: GeneratorSpec) -> GenerationEngine:
    """The engine of ``spec.backend``; a native weight transfer only with vLLM's."""
    if spec.backend == "vllm":
        return VLLMGenerator(spec)
    if spec.weight_transfer:
        raise ValueError(f"weight transfer over {spec.weight_transfer} needs generator.backend=vllm, "
                         f"got '{spec.backend}'")
    if spec.backend == "hf":
        return HFGenerator(spec)
    raise ValueError(f"unknown generator backend '{spec.backend}' (vllm | hf)")
