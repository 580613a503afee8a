"""The learner: holds the policy, caches reference log-probs once per iteration, trains.

Each iteration is a fresh optimisation from the current weights (AdamW with its
state cleared, the learning-rate schedule restarted), as in iterative DPO/SPPO/GPO
recipes; a resumed run therefore trains exactly like an uninterrupted one.  With
``algo.init=sft`` (DPA, [DPA]) the weights are first reset to pi_0.
``train.batch_size`` and ``train.micro_batch_size`` count training examples
(one sequence for the all-K forms, a (chosen, rejected) pair for pair losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from selfplay.algorithms.losses import categorical_kl
from selfplay.algorithms.registry import resolve
from selfplay.algorithms.unit import LossInputs
from selfplay.core.batch import Batch
from selfplay.core.checkpoint import atomic_dir
from selfplay.core.lm import load_causal_lm, load_tokenizer, response_batch, sequence_logprobs
from selfplay.core.optim import lr_multiplier
from selfplay.policy import lpc
from selfplay.policy.lora import (
    ADAPTER_DIR,
    adapter_state,
    add_adapters,
    hf_tensors,
    reset_adapters,
    trainable_parameters,
)
from selfplay.policy.lpc import LatentCodes
from selfplay.policy.parallel import Sharded, Single, share
from selfplay.policy.specs import LearnerSpec
from selfplay.policy.object_store_sync import Bucket, TensorMeta, pack, plan_buckets


class PolicyTrainer:  # implements selfplay.policy.verbs.Learner
    def __init__(self, spec: LearnerSpec, placement: Single | Sharded | None = None):
        """``spec``: what to train (``selfplay.policy.specs.LearnerSpec``): the weights to train from, the run's
        pi_0 (loaded when the algorithm's reference is the initial policy), its ``train``/``algo`` sections,
        seed, iterations (over which LPC's g rises with ``algo.lpc.g_over=run``) and the policy's opt-ins, for
        every load of it; ``placement``: one process (default) or this rank's place in a sharded group
        (``selfplay.policy.parallel``)."""
        model, train, algo, seed, dtype, trust = spec.model, spec.train, spec.algo, spec.seed, spec.dtype, spec.trust
        self.train_cfg, self.algo_cfg, self.seed = train, algo, seed
        self.dtype, self.initial, self.trust = dtype, spec.initial or model, trust
        self.placement = placement or Single(train.mixed_precision)
        self.lora = train.lora.rank > 0
        if self.lora:  # the base is pi_0; a resumed run's adapter is in its checkpoint (``model``)
            resumed = model if model != self.initial else None
            self.model = self.placement.wrap(add_adapters(load_causal_lm(self.initial, dtype, trust), train.lora, seed,
                                                          resumed))
        else:
            self.model = self.placement.wrap(load_causal_lm(model, dtype, trust))
        self.tokenizer = load_tokenizer(spec.tokenizer, trust)
        self.algorithm = resolve(algo)  # its unit, LPC-wrapped with algo.lpc.codes > 0
        self.iterations = spec.iterations
        # LPC's heads ([LPC]): a resumed run's from its checkpoint, else new (seeded by run.seed)
        self.codes: LatentCodes | None = None
        if self.algorithm.coded:
            torch.manual_seed(seed)
            self.codes = (lpc.load(model) if lpc.has_heads(model) else
                          LatentCodes(self.model.config.hidden_size, algo.lpc.codes, algo.lpc.mlp_hidden,
                                     algo.lpc.init_std))
            self.codes.to(self.placement.device)
        self.reference_model: torch.nn.Module | None = None
        self.batch: Batch | None = None
        # One optimizer for the run: accelerate keeps a reference to every optimizer it prepares.
        groups = [{"params": list(trainable_parameters(self.model) if self.lora else self.model.parameters()),
                   "base_lr": train.lr}]
        if self.codes is not None:  # LPC's heads start from random: their own learning rate (algo.lpc.lr)
            groups.append({"params": list(self.codes.parameters()), "base_lr": algo.lpc.lr or train.lr})
        opt = torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)
        self.optimizer, self.torch_optimizer = self.placement.optimizer(opt)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.sync_buckets: list[list[TensorMeta]] = []
        self.transfer = None  # vLLM's trainer-side weight-transfer engine, once connected

    def _tensors(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, attn, mask = response_batch(batch.row_prompt_ids(), batch.response_ids, self.tokenizer.pad_token_id)
        dev = self.placement.device
        return ids.to(dev), attn.to(dev), mask.to(dev)

    def _micro_batches(self, rows: list[int]) -> list[list[int]]:
        """This rank's share of ``rows`` (all ranks' rows, in one order) in micro-batches; every rank gets the
        same number of them, empty ones where its share runs out."""
        mine = [rows[i] for i in share(len(rows), self.placement.rank, self.placement.world_size)]
        mb = self.train_cfg.micro_batch_size
        count = math.ceil(math.ceil(len(rows) / self.placement.world_size) / mb)
        return [mine[i * mb:(i + 1) * mb] for i in range(count)]

    @torch.no_grad()
    def logprobs(self, batch: Batch, model: torch.nn.Module | None = None) -> torch.Tensor:
        """log pi(y|x) for every row under ``model`` (default: the current weights), in micro-batches, each rank
        its share.  (N,), CPU, on every rank."""
        model = model or self.model
        model.eval()
        out = []
        for part in self._micro_batches(list(range(len(batch)))):
            # a rank whose share has run out still runs the forward (its shards are needed), on row 0
            logps = sequence_logprobs(model, *self._tensors(batch.select(part or [0])))
            out.append(logps[:len(part) * batch.group].float().cpu())  # group: sequences per example
        return self.placement.gather(torch.cat(out))

    def _reference(self, name: str | None) -> torch.nn.Module | None:
        if name == "previous":
            return self.model
        if name == "initial":
            if self.reference_model is None:  # frozen pi_0, loaded once (sharded like the policy)
                self.reference_model = self.placement.wrap(load_causal_lm(self.initial, self.dtype, self.trust))
                self.reference_model.requires_grad_(False)
            return self.reference_model
        return None

    def steps_per_epoch(self, batch: Batch) -> int:
        return math.ceil(len(batch) / self.train_cfg.batch_size)

    def restore_initial(self) -> None:
        """Reset the weights to pi_0 (``initial``); with LoRA, every adapter's B to 0 (the base again)."""
        if self.lora:
            reset_adapters(self.placement.unwrap(self.model))
        else:
            initial = load_causal_lm(self.initial, self.dtype, self.trust)
            self.placement.load_full_state_dict(self.model, initial.state_dict())

    def _reference_logprobs(self, batch: Batch) -> torch.Tensor | None:
        if batch.reference == "initial" and self.lora:  # pi_0 is the base: the adapters off, no second copy
            with self.placement.unwrap(self.model).disable_adapter():
                return self.logprobs(batch)
        reference = self._reference(batch.reference)
        return None if reference is None else self.logprobs(batch, reference)

    def begin_iteration(self, batch: Batch) -> dict[str, float]:
        """Cache the reference log-probs (never recomputed per epoch); restart the optimizer and the schedule;
        with ``algo.init=sft``, start from pi_0 rather than pi_{t-1}."""
        if len(batch) == 0:
            raise ValueError("begin_iteration needs at least one training example")
        if self.algo_cfg.init == "sft":
            self.restore_initial()
        batch.ref_logps = self._reference_logprobs(batch)
        if batch.ref_logps is not None and not torch.isfinite(batch.ref_logps).all():
            bad = int((~torch.isfinite(batch.ref_logps)).sum())
            raise FloatingPointError(f"non-finite reference log-probs for {bad} of {len(batch.ref_logps)} sequences")
        self.batch = batch
        self.torch_optimizer.state.clear()  # AdamW keeps its step count in the state: a fresh start
        cfg = self.train_cfg
        total = cfg.epochs * self.steps_per_epoch(batch)
        for group in self.torch_optimizer.param_groups:
            group["lr"] = group["initial_lr"] = group["base_lr"]
        factor = lr_multiplier(total, math.ceil(cfg.warmup_ratio * total), cfg.lr_schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.torch_optimizer, factor)
        return {"num_examples": float(len(batch)), "num_sequences": float(len(batch.response_ids)),
                "optimizer_steps": float(total), "world_size": self.placement.world_size}

    def _loss_inputs(self, part: Batch, logps: torch.Tensor, kl: torch.Tensor | None) -> LossInputs:
        dev, shape = logps.device, (len(part), part.group)
        ref = None if part.ref_logps is None else part.ref_logps.to(dev).view(shape)
        return LossInputs(logps.view(shape), ref, part.targets.to(dev).view(shape), part.lengths().to(dev).view(shape),
                          kl)

    def _policy_logprobs(self, part: Batch, g: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log pi_theta(y|x) of every row; with LPC (pairs, chosen first), log pi_theta(y|x, z) with one z per pair
        from the mixture of the prior's and the posterior's Gumbel-softmax samples at weight g ([LPC]
        eq. 12), and KL(q || p) per pair, from the same backbone pass (``selfplay.policy.lpc``)."""
        ids, attn, mask = self._tensors(part)
        if self.codes is None:
            return sequence_logprobs(self.model, ids, attn, mask), None
        states = lpc.final_states(self.model, ids, attn)
        prompt_end, last = lpc.last_positions(mask, attn)
        rows, d = torch.arange(len(ids), device=ids.device), states.shape[-1]
        h_x, h_xy = states[rows, prompt_end].view(-1, 2, d)[:, 0], states[rows, last].view(-1, 2, d)
        prior = self.codes.prior_logits(h_x)
        posterior = self.codes.posterior_logits(h_xy[:, 0], h_xy[:, 1])
        z = self.codes.embed(lpc.mixture(prior, posterior, g, self.algo_cfg.lpc.gumbel_tau, gen))
        logps = lpc.conditioned_logprobs(self.model, states, ids, mask, z.repeat_interleave(2, dim=0))
        return logps, categorical_kl(posterior, prior)

    @torch.no_grad()
    def prompt_codes(self, prompt_ids: list[list[int]], inference: str, seed: int) -> torch.Tensor:
        """LPC: each prompt's code weights c from the prior given the prompt alone (``lpc.prompt_weights``);
        (P, C) on the CPU."""
        self.model.eval()
        out, gen = [], torch.Generator().manual_seed(seed)
        for start in range(0, len(prompt_ids), self.train_cfg.micro_batch_size):
            h_x = lpc.prompt_states(self.model, prompt_ids[start:start + self.train_cfg.micro_batch_size],
                                    self.tokenizer.pad_token_id)
            out.append(lpc.prompt_weights(self.codes, h_x, inference, gen).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def code_table(self) -> torch.Tensor:
        """LPC: W E, each code's logit shift (``lpc.code_table``); (C, V) float32 on the CPU."""
        return lpc.code_table(self.codes, self.model).float().cpu()

    def _mixing_weight(self, step: int, steps: int, iteration: int) -> float:
        """LPC's g at optimizer step ``step`` of ``steps`` in this iteration: rising 0 -> 1 over the iteration's
        training (``algo.lpc.g_over=iteration``) or over the whole run's (``run``)."""
        within = lpc.mixing_weight(step, steps)
        if self.algo_cfg.lpc.g_over == "iteration":
            return within
        return min(1.0, (iteration - 1 + within) / self.iterations)

    def train_epoch(self, epoch: int, iteration: int) -> dict[str, float]:
        """One pass over the cached batch in a seeded order; gradient accumulation over micro-batches.  With
        shards, each rank takes its share of every step (the same order on every rank)."""
        assert self.batch is not None and self.scheduler is not None, "begin_iteration first"
        cfg, batch = self.train_cfg, self.batch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration * 1_009 + epoch)
        order = torch.randperm(len(batch), generator=gen).tolist()
        steps = cfg.epochs * self.steps_per_epoch(batch)  # this iteration's optimizer steps, for LPC's g
        self.model.train()
        losses, grad_norms, lrs = [], [], []
        metric_sums: dict[str, float] = {}
        for start in range(0, len(order), cfg.batch_size):
            step_examples = order[start:start + cfg.batch_size]
            self.optimizer.zero_grad()
            step_loss = 0.0
            g = self._mixing_weight(epoch * self.steps_per_epoch(batch) + start // cfg.batch_size, steps, iteration)
            for part_rows in self._micro_batches(step_examples):
                part = batch.select(part_rows or step_examples[:1])
                logps, kl = self._policy_logprobs(part, g, gen)
                if not torch.isfinite(logps).all():  # before any update from them
                    raise FloatingPointError(f"non-finite policy log-probs in epoch {epoch}, optimizer step "
                                             f"{start // cfg.batch_size + 1}")
                per_example, metrics = self.algorithm.objective(self._loss_inputs(part, logps, kl), self.algo_cfg)
                # an empty share still runs forward and backward (the shards' collectives), with weight 0
                loss = per_example.sum() / len(step_examples) * (1.0 if part_rows else 0.0)
                self.placement.backward(loss)
                step_loss += loss.item()
                for k, v in metrics.items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v * len(part_rows)
            grad_norms.append(self.placement.clip(self.model, cfg.max_grad_norm))
            if self.codes is not None:
                torch.nn.utils.clip_grad_norm_(self.codes.parameters(), cfg.max_grad_norm)
            lrs.append(self.scheduler.get_last_lr()[0])
            self.optimizer.step()
            self.scheduler.step()
            losses.append(step_loss)
        losses = self.placement.all_sum(losses)
        names = sorted(metric_sums)  # the same on every rank: each ran the objective on every step
        metric_sums = dict(zip(names, self.placement.all_sum([metric_sums[k] for k in names])))
        if not all(math.isfinite(x) for x in losses):
            raise FloatingPointError(f"non-finite training loss in epoch {epoch}: {losses}")
        return {"loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
                "lr": lrs[-1], **{k: v / len(batch) for k, v in metric_sums.items()}, "step_losses": losses,
                "step_grad_norms": grad_norms}

    def _exported(self) -> dict[str, tuple[torch.Tensor, Callable[[], torch.Tensor]]]:
        """Hugging Face names -> (the tensor as held, a function giving it whole: gathered from the shards, or
        merged with its adapter), so that callers materialise one at a time."""
        model = self.placement.unwrap(self.model)
        if self.lora:
            return hf_tensors(model, self.placement.full_tensor)
        return {n: (t, lambda t=t: self.placement.full_tensor(t)) for n, t in model.state_dict().items()}

    def plan_sync(self, bucket_bytes: int) -> int:
        """Plan the buckets the weights go to the generators in (``weight_sync``); returns how many."""
        metas = [TensorMeta(n, t.dtype, tuple(t.shape)) for n, (t, _) in self._exported().items()]
        self.sync_buckets = plan_buckets(metas, bucket_bytes)
        return len(self.sync_buckets)

    def weight_bucket(self, i: int) -> Bucket | None:
        """Bucket ``i`` of the plan, full tensors (gathered from the shards), packed on rank 0; None on the other
        ranks, which take part in the gathering (every rank must call, in the same order)."""
        exported = self._exported()
        return pack(self.sync_buckets[i], lambda name: exported[name][1](), keep=self.placement.rank == 0)

    def connect_generators(self, transport: str, client, engine_ranks: int, bucket_bytes: int, address: str | None,
                           dtype: torch.dtype | None) -> None:
        """Rendezvous with the generators for vLLM's native weight transfer (``sync.transport=nccl|ipc``,
        ``selfplay.policy.vllm_transfer``): every rank at once; ``client`` reaches the generators (used by rank 0
        only), ``dtype`` is the one they serve."""
        from selfplay.policy.vllm_transfer import learner_source, trainer_engine

        metas = [TensorMeta(n, t.dtype, tuple(t.shape)) for n, (t, _) in self._exported().items()]
        wholes = lambda: {n: whole for n, (_, whole) in self._exported().items()}  # noqa: E731
        on_gpu = torch.cuda.is_available()  # the transfer reads from the GPU, also when the shards sit on the CPU
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else self.placement.device
        source = learner_source(metas, wholes, device, dtype)
        self.transfer = trainer_engine(transport, self.placement.rank, client, source, engine_ranks, bucket_bytes,
                                       address)
        self.transfer_buffers = math.ceil(sum(m.nbytes for m in metas) / bucket_bytes)

    def send_weights(self) -> int:
        """The current weights to every generator over the connected transport (every rank must call); returns
        the number of packed buffers they travelled in (about: the bytes over ``sync.bucket_mb``)."""
        if self.transfer is None:
            raise RuntimeError("send_weights before connect_generators: sync.transport=nccl|ipc connects first")
        self.transfer.send_weights()
        return self.transfer_buffers

    def save(self, path: str | Path) -> None:
        """A Hugging Face checkpoint (safetensors, config, tokenizer), written atomically; with shards, the full
        weights gathered to rank 0, which writes it (every rank must call)."""
        model = self.placement.unwrap(self.model)
        leader = self.placement.rank == 0
        if self.lora:  # the merged model, and the adapter alone in iter_N/adapter/ (each tensor whole on rank 0)
            state = {}
            for name, (_, whole) in self._exported().items():
                t = whole()
                if leader:
                    state[name] = t.cpu()
            adapters = adapter_state(model, self.placement.full_tensor)
        else:
            state = self.placement.full_state_dict(self.model)
        if not leader:
            return
        with atomic_dir(path) as tmp:
            (model.get_base_model() if self.lora else model).save_pretrained(tmp, state_dict=state)
            if self.lora:
                model.save_pretrained(Path(tmp) / ADAPTER_DIR, state_dict=adapters)
            if self.codes is not None:  # LPC's heads beside the policy: lpc.safetensors, lpc.json
                lpc.save(self.codes, tmp)
            self.tokenizer.save_pretrained(tmp)
