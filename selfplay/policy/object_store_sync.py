"""Weights from the learner to the generators in buckets: whole decoder layers packed into one flat byte buffer,
with each tensor's name, dtype, shape and offset beside it.

Why buckets: one call per parameter costs a round trip per tensor (open-instruct #1535 saw 120 s for a 7B
model from that), and one call with the whole state dict puts a second full copy of the model in the learner,
the object store and the generator at once.  A bucket bounds the extra memory to about ``bucket_bytes`` and
the round trips to the model's size over it.

Why whole layers: vLLM's in-place reload (``reload_weights``) processes a layer once all of its weights have
arrived within the call (q, k and v go into one fused parameter), so a bucket never splits a decoder layer.
Layers are keyed on the first integer segment of a name (``model.layers.3.mlp...`` -> layer 3), so any
architecture's stack partitions alike; names before the first layer (embeddings) form one group, and those
after it (final norm, lm_head) another.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class Bucket:
    """Packed tensors: ``data`` (uint8, numpy so that Ray's object store hands it out without a copy) and, per
    tensor, its metadata and byte offset in ``data``."""

    data: np.ndarray
    entries: list[tuple[TensorMeta, int]]

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) views into ``data``: nothing is copied here."""
        with warnings.catch_warnings():  # a read-only view of Ray's object store: the tensors are only read
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.from_numpy(self.data)
        for meta, offset in self.entries:
            yield meta.name, flat[offset:offset + meta.nbytes].view(meta.dtype).view(meta.shape)


def layer_groups(names: list[str]) -> list[list[str]]:
    """``names`` partitioned into: those before the first layer, one group per layer (in order of first
    appearance), those after.  A layer is the first integer segment of a name, with the prefix before it."""
    before, after, layers = [], [], {}
    for name in names:
        parts = name.split(".")
        index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
        if index is None:
            (after if layers else before).append(name)
        else:
            layers.setdefault(".".join(parts[:index + 1]), []).append(name)
    return [g for g in (before, *layers.values(), after) if g]


def plan_buckets(metas: list[TensorMeta], bucket_bytes: int) -> list[list[TensorMeta]]:
    """Consecutive layer groups packed into buckets of at most ``bucket_bytes`` (a layer larger than that is a
    bucket on its own): every tensor once, in ``metas`` order within a layer."""
    by_name = {m.name: m for m in metas}
    buckets: list[list[TensorMeta]] = []
    size = 0
    for group in layer_groups([m.name for m in metas]):
        group_metas = [by_name[n] for n in group]
        group_bytes = sum(m.nbytes for m in group_metas)
        if buckets and size + group_bytes <= bucket_bytes:
            buckets[-1] += group_metas
            size += group_bytes
        else:
            buckets.append(group_metas)
            size = group_bytes
    return buckets


def pack(metas: list[TensorMeta], tensor: Callable[[str], torch.Tensor], keep: bool = True) -> Bucket | None:
    """One flat byte buffer holding the tensors named by ``metas``, each fetched with ``tensor(name)`` (which may
    gather it from shards), copied in and dropped before the next, so the extra memory is the buffer and one
    tensor.  ``keep=False`` (the ranks that only help gather): fetch each tensor, pack nothing, return None."""
    entries, offset = [], 0
    for meta in metas:
        entries.append((meta, offset))
        offset += meta.nbytes
    data = np.empty(offset if keep else 0, dtype=np.uint8)
    flat = torch.from_numpy(data)
    for meta, start in entries:
        t = tensor(meta.name)
        if tuple(t.shape) != meta.shape or t.dtype != meta.dtype:
            raise ValueError(f"{meta.name}: got {t.dtype} {tuple(t.shape)}, the plan says {meta.dtype} {meta.shape}")
        if keep:
            flat[start:start + meta.nbytes].copy_(t.detach().contiguous().view(-1).view(torch.uint8))
        del t
    return Bucket(data, entries) if keep else None
