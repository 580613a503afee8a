"""Weights from the learner to the generators over vLLM's own weight-transfer API (``sync.transport=nccl`` or
``ipc``; GPUs only).  The object-store path (``selfplay.policy.object_store_sync``) is the default and the only one on
CPU; this one moves the tensors device to device.

vLLM's protocol (``vllm.distributed.weight_transfer``): the engine is started with
``WeightTransferConfig(backend=...)``; the trainer builds a ``TrainerWeightTransferEngine`` from a
``TrainerInitInfo`` (NCCL: a TCP rendezvous, the trainer at rank 0, the engines' workers after it), a
``WeightSource`` (its weights: names, dtypes and shapes, then the full tensors one at a time) and a client that
reaches the engines (``actors.generator.GeneratorsClient``: ``init_weight_transfer_engine``,
``start_weight_update``, ``update_weights``, ``finish_weight_update``).  Each ``send_weights`` then streams
the weights in packed buffers of ``sync.bucket_mb`` and the engines load them layer by layer in place.  Every
learner rank calls it: the ranks other than 0 only help gather the shards (FSDP's ``full_tensor``), rank 0 sends.
NCCL cannot put two ranks on one GPU, so colocated runs use ``ipc`` (CUDA IPC handles, no copy between
processes).

Those names hold in vLLM 0.32 and 0.33 (``VLLM_VERSIONS``); between them ``WeightSource`` changed shape
(0.32: ``metadata()`` and ``__iter__``; 0.33: a cached ``metadata`` property and ``iter_full()``), and
``LearnerSource`` answers both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cached_property

import torch

from selfplay.policy.object_store_sync import TensorMeta

VLLM_VERSIONS = ">=0.32,<0.34"  # where the names above hold; pyproject's gpu extra pins the same range


def require_api(transport: str) -> None:
    """One clear line when the installed vLLM lacks the weight-transfer API ``transport`` needs."""
    try:
        from vllm.distributed.weight_transfer.base import WeightSource  # noqa: F401
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory  # noqa: F401
    except ImportError as e:
        try:
            from vllm import __version__ as installed
        except ImportError:
            installed = "none"
        raise RuntimeError(f"sync.transport={transport} needs vLLM's weight-transfer API (vllm{VLLM_VERSIONS}); "
                           f"installed: {installed} ({e})") from e


class _Metas(list):
    """A list that is also callable (returning itself), so that ``source.metadata`` (vLLM 0.33) and
    ``source.metadata()`` (0.32) both give the parameters."""

    def __call__(self) -> "_Metas":
        return self


def learner_source(metas: list[TensorMeta], tensors: Callable[[], dict[str, Callable[[], torch.Tensor]]],
                   device: torch.device, dtype: torch.dtype | None = None):
    """A vLLM ``WeightSource`` over the learner's Hugging Face-named tensors: ``metas`` declares them (global
    shapes, no gathering); each pass asks ``tensors()`` once for, per name, a function giving the tensor whole
    (gathered from the shards, or merged with its LoRA adapter) and yields them in ``metas`` order on ``device``,
    floating tensors cast to ``dtype`` (the generators' serving dtype: a float32 learner sends a bfloat16 engine
    half the bytes)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    def wire(d: torch.dtype) -> torch.dtype:
        return dtype if dtype is not None and d.is_floating_point else d

    class LearnerSource(WeightSource):
        @cached_property
        def metadata(self) -> _Metas:
            return _Metas(ParamMeta(m.name, wire(m.dtype), m.shape) for m in metas)

        def iter_full(self) -> Iterator[tuple[str, torch.Tensor]]:
            whole = tensors()
            for m in metas:
                yield m.name, whole[m.name]().to(device=device, dtype=wire(m.dtype))

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            return self.iter_full()

    return LearnerSource()


def trainer_engine(transport: str, rank: int, client, source, engine_ranks: int, bucket_bytes: int,
                   address: str | None):
    """Rendezvous with the generators and return vLLM's trainer-side engine (call on every learner rank at
    once).  ``engine_ranks``: the generators' worker processes in all (replicas x tensor_parallel);
    ``address``: ``host:port`` of learner rank 0, where the NCCL group meets (None on the other ranks, which
    do not join it)."""
    require_api(transport)
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    if transport == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        host, port = address.rsplit(":", 1) if address else ("", 0)
        info = NCCLTrainerInitInfo(host, int(port), 1 + engine_ranks, packed=True,
                                   packed_buffer_size_bytes=bucket_bytes, rank=rank)
    elif transport == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        info = IPCTrainerInitInfo(packed=True, packed_buffer_size_bytes=bucket_bytes, rank=rank)
    else:
        raise ValueError(f"vLLM's weight transfer is over nccl or ipc, not '{transport}'")
    return WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)
