"""Where the learner's model lives: in one process (``Single``), or sharded over a process group (``Sharded``).

``Single`` is the plain path (``train.world_size=1``): accelerate puts the model on the device and applies
mixed precision, as before.  ``Sharded`` (``train.world_size=N``) is data parallel over N ranks with FSDP2
(``torch.distributed.fsdp.fully_shard``): one unit per transformer block, then the root; on a GPU bf16
parameters with fp32 gradient reduction.  Every rank takes a contiguous share of each optimizer step's
examples; each rank's loss is already divided by the *global* step size, so gradients are summed over ranks,
never averaged, and the sharded step equals the one-process step (``tests/policy/test_learner_group.py``).

Both give the learner the same verbs; a collective (``gather``, ``all_sum``, the state-dict calls, and every
forward and backward of a sharded model) must be called by every rank, the same number of times.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator


def mixed_precision(setting: str) -> str:
    """``auto``: bf16 on a GPU that supports it, else full precision."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def share(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``n`` items: ceil(n / world_size) of them (the last rank may get fewer,
    or none)."""
    size = math.ceil(n / world_size)
    return range(min(rank * size, n), min((rank + 1) * size, n))


class Single:
    """One process: the model and optimizer prepared by accelerate (mixed precision, device)."""

    rank, world_size = 0, 1

    def __init__(self, precision: str):
        self.accelerator = Accelerator(mixed_precision=mixed_precision(precision), cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.prepare(model)

    def optimizer(self, opt: torch.optim.Optimizer) -> tuple[Any, torch.optim.Optimizer]:
        """(what to step, the torch optimizer inside it)."""
        prepared = self.accelerator.prepare(opt)
        return prepared, prepared.optimizer

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip(self, model: torch.nn.Module, max_norm: float) -> float:
        return float(self.accelerator.clip_grad_norm_(model.parameters(), max_norm))

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Hugging Face names -> CPU tensors (copies)."""
        return {n: t.detach().to("cpu", copy=True) for n, t in self.accelerator.unwrap_model(model).state_dict().items()}

    def load_full_state_dict(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        self.accelerator.unwrap_model(model).load_state_dict(state)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    @staticmethod
    def full_tensor(t: torch.Tensor) -> torch.Tensor:
        return t

    def gather(self, part: torch.Tensor) -> torch.Tensor:
        return part

    def all_sum(self, values: list[float]) -> list[float]:
        return values


class Sharded:
    """Rank ``rank`` of ``world_size``: joins the process group at ``address`` (``host:port`` of rank 0) and shards
    models over it with FSDP2."""

    def __init__(self, rank: int, world_size: int, address: str, precision: str, cpu_offload: bool = False,
                 activation_checkpointing: bool = False, timeout_s: float = 1800.0):
        from datetime import timedelta

        from torch.distributed.device_mesh import init_device_mesh

        self.rank, self.world_size = rank, world_size
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(0)  # Ray gives each rank its own GPU as device 0
        self.device = torch.device("cuda" if cuda else "cpu")
        self.precision = mixed_precision(precision)
        self.cpu_offload, self.activation_checkpointing = cpu_offload, activation_checkpointing
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://{address}", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout_s))
        self.mesh = init_device_mesh(self.device.type, (world_size,))

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """fully_shard every transformer block (the classes in the model's ``_no_split_modules``), then the root."""
        from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        if self.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        blocks = set(getattr(model, "_no_split_modules", None) or ())
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if self.precision == "bf16" else MixedPrecisionPolicy())
        kw = {"mesh": self.mesh, "mp_policy": mp, "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy()}
        if not self.cpu_offload:
            model.to(self.device)
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module, **kw)
        fully_shard(model, **kw)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(1.0)  # sum over ranks: each loss is over the global step size
                module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
        return model

    def optimizer(self, opt: torch.optim.Optimizer) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return opt, opt

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip(self, model: torch.nn.Module, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # DTensors: the global norm
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The full (unsharded) weights on rank 0's CPU, gathered one tensor at a time; None on the other ranks."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.rank == 0 else None

    def load_full_state_dict(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    @staticmethod
    def full_tensor(t: torch.Tensor) -> torch.Tensor:
        """A sharded tensor gathered whole on every rank (a collective)."""
        return t.full_tensor() if hasattr(t, "full_tensor") else t

    def gather(self, part: torch.Tensor) -> torch.Tensor:
        """Every rank's ``part`` (1-D, CPU), concatenated in rank order, on every rank."""
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, part.cpu())
        return torch.cat(parts)

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

