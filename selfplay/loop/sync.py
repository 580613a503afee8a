"""Weight sync between the learner and the generators, and colocated sleep (``placement.colocate``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from omegaconf import DictConfig

from actors.generator import GeneratorsClient
from actors.group import leader, wait_named
from selfplay.algorithms.registry import resolve
from selfplay.loop.workers import Workers, failing_as


@contextmanager
def generators_asleep(workers: Workers, cfg: DictConfig, times: dict[str, float]) -> Iterator[None]:
    """Colocated mode (``placement.colocate``): the generators sleep while the block runs, so the learner has the
    devices, and wake after it; ``sleep_s`` / ``wake_s`` go into ``times``.  At level 2 their weights are gone
    until the weight sync, which must come next.  Without colocation, nothing."""
    if not cfg.placement.colocate:
        yield
        return
    generators = workers.generator_group()
    start = time.perf_counter()
    with failing_as("sleep"):
        generators.wait(generators.sleep(cfg.placement.sleep_level), cfg.sync.timeout_s, "sleep")
    times["sleep_s"] = round(time.perf_counter() - start, 3)
    try:
        yield
    finally:
        start = time.perf_counter()
        with failing_as("wake up"):
            generators.wait(generators.wake_up(), cfg.sync.timeout_s, "wake up")
        times["wake_s"] = round(time.perf_counter() - start, 3)


def connect_weight_transfer(workers: Workers, cfg: DictConfig) -> None:
    """``sync.transport=nccl|ipc``: the learner ranks and the generators meet once, for vLLM's native weight
    transfer (``selfplay.policy.vllm_transfer``); the object store needs nothing."""
    if cfg.sync.transport == "object_store":
        return
    client = GeneratorsClient(workers.generators, cfg.generator.tensor_parallel, cfg.sync.timeout_s)
    dtype = getattr(torch, cfg.generator.dtype or cfg.policy.dtype)
    learner = workers.learner
    learner.wait(learner.connect_generators(cfg.sync.transport, client,
                                            len(workers.generators) * cfg.generator.tensor_parallel,
                                            int(cfg.sync.bucket_mb * 2**20), dtype),
                 2 * cfg.sync.timeout_s, "weight transfer rendezvous")


def send_code_table(workers: Workers, cfg: DictConfig, only: list[int] | None = None) -> None:
    """LPC: the generators (``only`` these, if given) get W E, each code's logit shift, from the learner
    (``selfplay.policy.lpc``)."""
    if not resolve(cfg.algo).coded:
        return
    import ray

    table = ray.put(leader(workers.learner.code_table()))
    generators = workers.generator_group(only)
    generators.wait(generators.set_code_table(table), cfg.sync.timeout_s, "LPC code table")


def sync_weights(workers: Workers, cfg: DictConfig, only: list[int] | None = None) -> int:
    """Learner -> every generator, in buckets of whole layers (``selfplay.policy.object_store_sync``) through the object
    store, loaded in place; bucket i + 1 is gathered and packed while the generators load bucket i.  Each bucket
    is bounded by ``sync.timeout_s``, whose error names the generator that did not answer.  Returns the number
    of buckets.  With ``sync.transport=nccl|ipc``, learner rank 0 streams them to the generators itself over
    vLLM's transfer (each of its calls to them bounded the same way).  ``only``: these generators (a restarted
    one), by the object store."""
    send_code_table(workers, cfg, only)
    learner = workers.learner
    if cfg.sync.transport != "object_store":
        # start, update and finish are each bounded inside; this bounds a broadcast that a dead generator left
        return learner.wait(learner.send_weights(), 3 * cfg.sync.timeout_s, "weight sync")[0]
    generators = workers.generator_group(only)
    n = leader(learner.plan_sync(int(cfg.sync.bucket_mb * 2**20)))
    parts = learner.weight_bucket(0)  # rank 0's packed bucket first; the other ranks help gather it
    for i in range(n):
        loads = generators.load_bucket(parts[0])
        helpers = parts[1:]
        parts = learner.weight_bucket(i + 1) if i + 1 < n else []
        wait_named(loads + helpers, generators.names + learner.names[1:],
                   cfg.sync.timeout_s, f"weight sync, bucket {i + 1} of {n}")
    generators.wait(generators.finish_sync(), cfg.sync.timeout_s, "weight sync")
    return n
