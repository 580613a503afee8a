"""Tensor parallelism for the generator's vLLM engine: what a model and a machine can take, and how vLLM's CPU
workers are bound to cores.

vLLM splits the attention heads over the ``tensor_parallel`` ranks (``ModelConfig.verify_with_parallel_config``:
the heads must divide evenly) and the key/value heads too, replicating them where there are fewer than ranks
(``QKVParallelLinear``: ``divide(tp, kv)`` or ``divide(kv, tp)``).  On a CPU each rank is a worker process
whose OpenMP threads vLLM binds by ``VLLM_CPU_OMP_THREADS_BIND``: its default, ``auto``, gives each rank a NUMA
node of its own, so TP = 2 on a one-node machine dies with "Not enough allowed NUMA nodes to bind threads of 2
local CPUWorkers"; an explicit list of cores per rank ("0|1") runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

BIND = "VLLM_CPU_OMP_THREADS_BIND"


def cpu_binding(cpus: Sequence[int], ranks: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``ranks`` CPU workers over ``cpus``: consecutive, equal shares (the
    first ranks take one more where they do not divide), ranks separated by '|', e.g. [0, 1, 2, 3], 2 -> "0,1|2,3"."""
    cpus = sorted(cpus)
    if ranks < 1 or len(cpus) < ranks:
        raise ValueError(f"{ranks} vLLM CPU workers need a core each; {len(cpus)} are available")
    share, extra = divmod(len(cpus), ranks)
    groups, start = [], 0
    for r in range(ranks):
        size = share + (r < extra)
        groups.append(",".join(map(str, cpus[start:start + size])))
        start += size
    return "|".join(groups)


def bind_cpu_workers(ranks: int) -> None:
    """Before a CPU engine of ``ranks`` > 1 workers starts: bind them to this process's cores, unless the user
    chose a binding."""
    if ranks > 1 and BIND not in os.environ:
        os.environ[BIND] = cpu_binding(sorted(os.sched_getaffinity(0)), ranks)


def tensor_parallel_problems(tp: int, heads: int | None, kv_heads: int | None, cpus: int | None) -> list[str]:
    """What stops ``generator.tensor_parallel`` = tp for a model of ``heads`` attention heads and ``kv_heads``
    key/value heads (None: unknown), on ``cpus`` cores (None: the engine runs on GPUs)."""
    key, out = f"generator.tensor_parallel={tp}", []
    if heads and heads % tp:
        out.append(f"{key} does not divide the policy's {heads} attention heads (vLLM splits them evenly)")
    kv = kv_heads or heads
    if kv and (tp % kv if tp >= kv else kv % tp):
        out.append(f"{key} and the policy's {kv} key/value heads: one must divide the other (vLLM splits or "
                   "replicates them)")
    if cpus is not None and tp > cpus:
        out.append(f"{key} on the CPU needs a core per worker; this machine has {cpus}")
    return out
