"""vLLM's NCCL weight transfer with its data plane swapped for one that runs on a CPU: each tensor goes whole
through the rendezvous' TCP store (vLLM's ``StatelessProcessGroup.broadcast_obj``) instead of an NCCL broadcast.

Everything else is the real path: our ``trainer_engine`` and ``learner_source``, vLLM's trainer engine (its
handshake, metadata, the update running beside the broadcast), ``GeneratorsClient`` and our generators' engine
(vLLM's worker engine, its layerwise reload).  ``patch_worker`` runs in each generator's process (the test
calls it through the actor's ``__ray_call__``), ``patch_trainer`` in the learner's.
"""

from __future__ import annotations


def _group(host: str, port: int, rank: int, world_size: int):
    from vllm.distributed.utils import StatelessProcessGroup

    return StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)


def patch_worker() -> None:
    from vllm.distributed.weight_transfer import nccl_engine

    def init_group(info, parallel_config):
        return _group(info.master_address, info.master_port, info.rank_offset + parallel_config.rank,
                      info.world_size)

    def consume(iterator, group, src, post_unpack_func, **_):
        for name, (shape, dtype) in iterator:
            tensor = group.broadcast_obj(None, src=src)
            assert tuple(tensor.shape) == tuple(shape) and tensor.dtype == dtype, (name, tensor.shape, shape)
            post_unpack_func([(name, tensor)])

    nccl_engine.worker_init_process_group = init_group
    nccl_engine.packed_nccl_broadcast_consumer = consume


def patch_trainer(set_attribute=setattr) -> None:
    """``set_attribute``: pytest's ``monkeypatch.setattr`` in the test's own process."""
    from vllm.distributed.weight_transfer import nccl_engine

    def produce(iterator, group, src, post_iter_func, **_):
        for item in iterator:
            group.broadcast_obj(post_iter_func(item), src=src)

    set_attribute(nccl_engine, "open_trainer_endpoint",
                  lambda info: _group(info.master_address, info.master_port, 0, info.world_size))
    set_attribute(nccl_engine, "packed_nccl_broadcast_producer", produce)
