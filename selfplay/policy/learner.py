"""The learner: holds the policy, caches reference log-probs once per iteration, trains.

Each iteration is a fresh optimisation from the current weights (AdamW with its
state cleared, the learning-rate schedule restarted), as in iterative DPO/SPPO/GPO
recipes; a resumed run therefore trains exactly like an uninterrupted one.  With
``algo.init=sft`` (DPA, seed 003) the weights are first reset to pi_0.
``train.batch_size`` and ``train.micro_batch_size`` count training examples
(one sequence for the all-K forms, a (chosen, rejected) pair for pair losses).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import DictConfig

from selfplay.algorithms.registry import LossInputs, get_algorithm
from selfplay.core.batch import Batch
from selfplay.core.checkpoint import atomic_dir
from selfplay.core.lm import load_causal_lm, load_tokenizer, response_batch, sequence_logprobs
from selfplay.core.optim import lr_multiplier


def mixed_precision(setting: str) -> str:
    """``auto``: bf16 on a GPU that supports it, else full precision."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class Learner:
    def __init__(self, model: str, tokenizer: str, dtype: str, train: DictConfig, algo: DictConfig, seed: int,
                 initial: str | None = None):
        """``model``: the weights to train from; ``initial``: the run's pi_0 (default ``model``), loaded
        when the algorithm's reference is the initial policy."""
        self.train_cfg, self.algo_cfg, self.seed = train, algo, seed
        self.dtype, self.initial = dtype, initial or model
        self.accelerator = Accelerator(mixed_precision=mixed_precision(train.mixed_precision),
                                       cpu=not torch.cuda.is_available())
        self.model = self.accelerator.prepare(load_causal_lm(model, dtype))
        self.tokenizer = load_tokenizer(tokenizer)
        self.algorithm = get_algorithm(algo.name)
        self.reference_model: torch.nn.Module | None = None
        self.batch: Batch | None = None
        # One optimizer for the run: accelerate keeps a reference to every optimizer it prepares.
        opt = torch.optim.AdamW(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.optimizer = self.accelerator.prepare(opt)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    def _tensors(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, attn, mask = response_batch(batch.row_prompt_ids(), batch.response_ids, self.tokenizer.pad_token_id)
        dev = self.accelerator.device
        return ids.to(dev), attn.to(dev), mask.to(dev)

    @torch.no_grad()
    def logprobs(self, batch: Batch, model: torch.nn.Module | None = None) -> torch.Tensor:
        """log pi(y|x) for every row under ``model`` (default: the current weights), in micro-batches.  (N,), CPU."""
        model = model or self.model
        model.eval()
        mb = self.train_cfg.micro_batch_size
        out = [sequence_logprobs(model, *self._tensors(batch.select(list(range(i, min(i + mb, len(batch)))))))
               for i in range(0, len(batch), mb)]
        return torch.cat(out).float().cpu()

    def _reference(self, name: str | None) -> torch.nn.Module | None:
        if name == "previous":
            return self.model
        if name == "initial":
            if self.reference_model is None:  # frozen pi_0, loaded once
                self.reference_model = self.accelerator.prepare(load_causal_lm(self.initial, self.dtype))
                self.reference_model.requires_grad_(False)
            return self.reference_model
        return None

    def steps_per_epoch(self, batch: Batch) -> int:
        return math.ceil(len(batch) / self.train_cfg.batch_size)

    def restore_initial(self) -> None:
        """Reset the weights to pi_0 (``initial``)."""
        state = load_causal_lm(self.initial, self.dtype).state_dict()
        self.accelerator.unwrap_model(self.model).load_state_dict(state)

    def begin_iteration(self, batch: Batch) -> dict[str, float]:
        """Cache the reference log-probs (never recomputed per epoch); restart the optimizer and the schedule;
        with ``algo.init=sft``, start from pi_0 rather than pi_{t-1}."""
        if len(batch) == 0:
            raise ValueError("begin_iteration needs at least one training example")
        if self.algo_cfg.init == "sft":
            self.restore_initial()
        reference = self._reference(batch.reference)
        batch.ref_logps = None if reference is None else self.logprobs(batch, reference)
        self.batch = batch
        self.optimizer.optimizer.state.clear()  # AdamW keeps its step count in the state: a fresh start
        cfg = self.train_cfg
        total = cfg.epochs * self.steps_per_epoch(batch)
        for group in self.optimizer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = cfg.lr
        factor = lr_multiplier(total, math.ceil(cfg.warmup_ratio * total), cfg.lr_schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, factor)
        return {"num_examples": float(len(batch)), "num_sequences": float(len(batch.response_ids)),
                "optimizer_steps": float(total)}

    def _loss_inputs(self, part: Batch, logps: torch.Tensor) -> LossInputs:
        dev, shape = logps.device, (len(part), part.group)
        ref = None if part.ref_logps is None else part.ref_logps.to(dev).view(shape)
        return LossInputs(logps.view(shape), ref, part.targets.to(dev).view(shape), part.lengths().to(dev).view(shape))

    def train_epoch(self, epoch: int, iteration: int) -> dict[str, float]:
        """One pass over the cached batch in a seeded order; gradient accumulation over micro-batches."""
        assert self.batch is not None and self.scheduler is not None, "begin_iteration first"
        cfg, batch = self.train_cfg, self.batch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration * 1_009 + epoch)
        order = torch.randperm(len(batch), generator=gen).tolist()
        self.model.train()
        losses, grad_norms, lrs = [], [], []
        metric_sums: dict[str, float] = {}
        for start in range(0, len(order), cfg.batch_size):
            step_examples = order[start:start + cfg.batch_size]
            self.optimizer.zero_grad()
            step_loss = 0.0
            for m in range(0, len(step_examples), cfg.micro_batch_size):
                part = batch.select(step_examples[m:m + cfg.micro_batch_size])
                logps = sequence_logprobs(self.model, *self._tensors(part))
                per_example, metrics = self.algorithm.objective(self._loss_inputs(part, logps), self.algo_cfg)
                loss = per_example.sum() / len(step_examples)
                self.accelerator.backward(loss)
                step_loss += loss.item()
                for k, v in metrics.items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v * len(part)
            grad_norms.append(float(self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)))
            lrs.append(self.scheduler.get_last_lr()[0])
            self.optimizer.step()
            self.scheduler.step()
            losses.append(step_loss)
        if not all(math.isfinite(x) for x in losses):
            raise FloatingPointError(f"non-finite training loss in iteration {iteration}, epoch {epoch}: {losses}")
        return {"loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
                "lr": lrs[-1], **{k: v / len(batch) for k, v in metric_sums.items()}}

    def weights(self) -> dict[str, torch.Tensor]:
        """Hugging Face parameter names -> CPU tensors (full, unsharded), for the generators."""
        model = self.accelerator.unwrap_model(self.model)
        return {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """A Hugging Face checkpoint (safetensors, config, tokenizer), written atomically."""
        with atomic_dir(path) as tmp:
            self.accelerator.unwrap_model(self.model).save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
