"""The learner: holds the policy, computes old-policy log-probs once per iteration, trains.

Each iteration is a fresh optimisation from the current weights (AdamW with its
state cleared, constant learning rate), as in iterative DPO/SPPO/GPO recipes; a
resumed run therefore trains exactly like an uninterrupted one.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import DictConfig

from selfplay.algorithms import get_algorithm
from selfplay.batch import TrainBatch
from selfplay.checkpoint import atomic_dir
from selfplay.modeling import load_causal_lm, load_tokenizer, response_batch, sequence_logprobs


class Learner:
    def __init__(self, model: str, tokenizer: str, dtype: str, train: DictConfig, algo: DictConfig, seed: int):
        self.train_cfg, self.algo_cfg, self.seed = train, algo, seed
        self.accelerator = Accelerator(mixed_precision=train.mixed_precision, cpu=not torch.cuda.is_available())
        self.model = self.accelerator.prepare(load_causal_lm(model, dtype))
        self.tokenizer = load_tokenizer(tokenizer)
        self.algorithm = get_algorithm(algo.name)
        self.batch: TrainBatch | None = None
        # One optimizer for the run: accelerate keeps a reference to every optimizer it prepares.
        opt = torch.optim.AdamW(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.optimizer = self.accelerator.prepare(opt)

    def _tensors(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, attn, mask = response_batch(batch.prompt_ids, batch.response_ids, self.tokenizer.pad_token_id)
        dev = self.accelerator.device
        return ids.to(dev), attn.to(dev), mask.to(dev)

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """log pi(y|x) under the current weights for every row, in micro-batches.  Returns (N,) on CPU."""
        self.model.eval()
        mb = self.train_cfg.micro_batch_size
        out = [sequence_logprobs(self.model, *self._tensors(batch.select(list(range(i, min(i + mb, len(batch)))))))
               for i in range(0, len(batch), mb)]
        return torch.cat(out).float().cpu()

    def begin_iteration(self, batch: TrainBatch) -> dict[str, float]:
        """Cache old-policy log-probs (never recomputed per epoch) and reset the optimizer's state."""
        batch.old_logps = self.logprobs(batch)
        self.batch = batch
        self.optimizer.optimizer.state.clear()  # AdamW keeps its step count in the state: a fresh start
        return {"num_sequences": float(len(batch)), "mean_target": batch.targets.mean().item()}

    def train_epoch(self, epoch: int, iteration: int) -> dict[str, float]:
        """One pass over the cached batch in a seeded order; gradient accumulation over micro-batches."""
        assert self.batch is not None, "begin_iteration first"
        cfg, batch = self.train_cfg, self.batch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration * 1_009 + epoch)
        order = torch.randperm(len(batch), generator=gen).tolist()
        self.model.train()
        losses, grad_norms, residuals = [], [], []
        for start in range(0, len(order), cfg.batch_size):
            step_rows = order[start:start + cfg.batch_size]
            self.optimizer.zero_grad()
            step_loss = 0.0
            for m in range(0, len(step_rows), cfg.micro_batch_size):
                rows = step_rows[m:m + cfg.micro_batch_size]
                part = batch.select(rows)
                logps = sequence_logprobs(self.model, *self._tensors(part))
                per_example = self.algorithm.loss(logps, part.old_logps.to(logps.device), part.targets.to(logps.device))
                loss = per_example.sum() / len(step_rows)
                self.accelerator.backward(loss)
                step_loss += loss.item()
                residuals.append((logps.detach().cpu() - part.old_logps - part.targets).abs().mean().item())
            grad_norms.append(float(self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)))
            self.optimizer.step()
            losses.append(step_loss)
        if not all(math.isfinite(x) for x in losses):
            raise FloatingPointError(f"non-finite training loss in iteration {iteration}, epoch {epoch}: {losses}")
        return {"loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
                "abs_residual": sum(residuals) / len(residuals)}

    def weights(self) -> dict[str, torch.Tensor]:
        """Hugging Face parameter names -> CPU tensors (full, unsharded), for the generators."""
        model = self.accelerator.unwrap_model(self.model)
        return {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """A Hugging Face checkpoint (safetensors, config, tokenizer), written atomically."""
        with atomic_dir(path) as tmp:
            self.accelerator.unwrap_model(self.model).save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
