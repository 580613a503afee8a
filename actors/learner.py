"""Learner actors: ``train.world_size`` ranks that hold the policy (whole, or a shard of it) and its optimizer,
and the group that the driver calls as one learner (verl's worker group: one call, every rank)."""

from __future__ import annotations

import socket

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from selfplay.core.lm import ModelTrust
from selfplay.policy.trainer import PolicyTrainer
from selfplay.policy.parallel import Sharded, Single


@ray.remote
class LearnerWorker:
    """Rank ``rank`` of ``world_size``: started empty, then ``setup`` (every rank at once, for the rendezvous)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.learner: PolicyTrainer | None = None

    def address(self) -> str:
        """``host:port`` for the process group's rendezvous (asked of rank 0): this node's address, a free port."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def setup(self, address: str | None, model: str, tokenizer: str, dtype: str, train, algo, seed: int,
              initial: str | None, iterations: int = 1, trust: ModelTrust = ModelTrust()) -> None:
        placement = (Single(train.mixed_precision) if self.world_size == 1 else
                     Sharded(self.rank, self.world_size, address, train.mixed_precision, train.cpu_offload,
                             train.activation_checkpointing))
        self.learner = PolicyTrainer(model, tokenizer, dtype, train, algo, seed, initial, placement, iterations, trust)

    def begin_iteration(self, batch):
        return self.learner.begin_iteration(batch)

    def train_epoch(self, epoch: int, iteration: int):
        return self.learner.train_epoch(epoch, iteration)

    def plan_sync(self, bucket_bytes: int) -> int:
        return self.learner.plan_sync(bucket_bytes)

    def weight_bucket(self, i: int):
        return self.learner.weight_bucket(i)

    def prompt_codes(self, prompt_ids, inference: str, seed: int):
        return self.learner.prompt_codes(prompt_ids, inference, seed)

    def code_table(self):
        return self.learner.code_table()

    def connect_generators(self, transport: str, client, engine_ranks: int, bucket_bytes: int, dtype) -> None:
        address = self.address() if self.rank == 0 else None  # where the NCCL group meets: rank 0 sends
        self.learner.connect_generators(transport, client, engine_ranks, bucket_bytes, address, dtype)

    def send_weights(self) -> int:
        return self.learner.send_weights()

    def save(self, path: str) -> None:
        self.learner.save(path)


class LearnerGroup:
    """The learner ranks, called as one: each method sends the call to every rank and returns their refs, rank 0's
    first (its value is the group's: ``actors.group.leader``).  One rank is the plain, unsharded path."""

    def __init__(self, ranks: list, ready: list, group=None):
        self.ranks, self.ready = ranks, ready  # ready: the ranks' setup refs, to wait on once
        self.group = group  # the placement group of several ranks

    @classmethod
    def start(cls, train, model: str, tokenizer: str, dtype: str, algo, seed: int, initial: str | None,
              env_vars: dict[str, str], strategy: str = "PACK", resources: dict[str, float] | None = None,
              iterations: int = 1, trust: ModelTrust = ModelTrust()) -> "LearnerGroup":
        """``train.world_size`` ranks, in one placement group (one bundle each, placed by ``strategy``) when there
        are several; ``resources``: custom Ray resources each rank needs (node affinity); ``iterations``: the
        run's (LPC's g may rise over them); ``trust``: the policy's opt-ins (``policy.trust_remote_code`` /
        ``policy.allow_pickle``)."""
        n, resources = train.world_size, dict(resources or {})
        options = {"num_cpus": train.num_cpus, "num_gpus": train.num_gpus, "runtime_env": {"env_vars": env_vars},
                   "resources": resources}
        if n > 1:
            bundle = {"CPU": max(train.num_cpus, 0.01), **({"GPU": train.num_gpus} if train.num_gpus else {}),
                      **resources}
            group = placement_group([bundle] * n, strategy=strategy)
            ranks = [LearnerWorker.options(**options, scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=r)).remote(r, n) for r in range(n)]
            address = ranks[0].address.remote()
        else:
            group, ranks, address = None, [LearnerWorker.options(**options).remote(0, 1)], None
        ready = [r.setup.remote(address, model, tokenizer, dtype, train, algo, seed, initial, iterations, trust)
                 for r in ranks]
        return cls(ranks, ready, group)

    def begin_iteration(self, batch) -> list:
        batch = ray.put(batch)  # once into the object store, not once per rank
        return [r.begin_iteration.remote(batch) for r in self.ranks]

    def train_epoch(self, epoch: int, iteration: int) -> list:
        return [r.train_epoch.remote(epoch, iteration) for r in self.ranks]

    def plan_sync(self, bucket_bytes: int) -> list:
        """Plan the weight buckets (``selfplay.policy.object_store_sync``); each rank's value is their number."""
        return [r.plan_sync.remote(bucket_bytes) for r in self.ranks]

    def weight_bucket(self, i: int) -> list:
        """Bucket i, full tensors packed on rank 0 (the first ref); the other ranks help gather it."""
        return [r.weight_bucket.remote(i) for r in self.ranks]

    def prompt_codes(self, prompt_ids: list[list[int]], inference: str, seed: int) -> list:
        """LPC: each prompt's code weights from the prior (one rank: LPC runs unsharded)."""
        return [r.prompt_codes.remote(prompt_ids, inference, seed) for r in self.ranks]

    def code_table(self) -> list:
        """LPC: W E, each code's logit shift."""
        return [r.code_table.remote() for r in self.ranks]

    def connect_generators(self, transport: str, client, engine_ranks: int, bucket_bytes: int, dtype) -> list:
        """vLLM's native weight transfer (``selfplay.policy.vllm_transfer``): every rank joins, rank 0 sends."""
        return [r.connect_generators.remote(transport, client, engine_ranks, bucket_bytes, dtype) for r in self.ranks]

    def send_weights(self) -> list:
        return [r.send_weights.remote() for r in self.ranks]

    def save(self, path: str) -> list:
        return [r.save.remote(path) for r in self.ranks]

    def stop(self) -> None:
        for r in self.ranks:
            ray.kill(r)
        if self.group is not None:
            ray.util.remove_placement_group(self.group)
