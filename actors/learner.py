"""Learner actors: ``train.world_size`` ranks that hold the policy (whole, or a shard of it) and its optimizer,
and the group that the driver calls as one learner (verl's worker group: one call, every rank).  The verbs are
the learner's (``selfplay.policy.verbs.Learner``), forwarded by ``actors.roles.shell``."""

from __future__ import annotations

import socket

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.group import rank_names
from actors.roles import Group, preload, shell
from selfplay.policy.specs import LearnerSpec
from selfplay.policy.verbs import Learner


class Rank:
    """What a learner rank has beyond the forwarded verbs: its place (``rank`` of ``world_size``), started empty
    (importing ``imports``, its role's libraries, meanwhile), then ``setup`` (every rank at once, for the
    rendezvous)."""

    def __init__(self, rank: int, world_size: int, imports: tuple[str, ...] = ()):
        preload(imports)
        self.rank, self.world_size = rank, world_size
        self.held = None  # the PolicyTrainer

    def address(self) -> str:
        """``host:port`` for the process group's rendezvous (asked of rank 0): this node's address, a free port."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def setup(self, address: str | None, spec: LearnerSpec) -> None:
        from selfplay.policy.parallel import Sharded, Single
        from selfplay.policy.trainer import PolicyTrainer

        train = spec.train
        placement = (Single(train.mixed_precision) if self.world_size == 1 else
                     Sharded(self.rank, self.world_size, address, train.mixed_precision, train.cpu_offload,
                             train.activation_checkpointing))
        self.held = PolicyTrainer(spec, placement)

    def connect_generators(self, transport: str, client, engine_ranks: int, bucket_bytes: int, dtype) -> None:
        """``Learner.connect_generators``, with where the NCCL group meets: rank 0's address (rank 0 sends)."""
        address = self.address() if self.rank == 0 else None
        self.held.connect_generators(transport, client, engine_ranks, bucket_bytes, address, dtype)


LearnerWorker = shell("LearnerWorker", Learner, base=Rank, module=__name__)


class LearnerGroup(Group):
    """The learner ranks, called as one: each verb goes to every rank and returns their refs, rank 0's first (its
    value is the group's: ``actors.group.leader``).  One rank is the plain, unsharded path."""

    def __init__(self, ranks: list, ready: list, group=None):
        super().__init__(Learner, ranks, rank_names(ranks))
        self.ready = ready  # the ranks' setup refs, to wait on once
        self.group = group  # the placement group of several ranks

    @property
    def ranks(self) -> list:
        return self.members

    @classmethod
    def start(cls, spec: LearnerSpec, env_vars: dict[str, str], strategy: str = "PACK",
              resources: dict[str, float] | None = None) -> LearnerGroup:
        """``spec.train.world_size`` ranks, in one placement group (one bundle each, placed by ``strategy``) when
        there are several; ``resources``: custom Ray resources each rank needs (node affinity)."""
        return cls.create(spec.train, env_vars, strategy, resources).setup(spec)

    @classmethod
    def create(cls, train, env_vars: dict[str, str], strategy: str = "PACK", resources: dict[str, float] | None = None,
               imports: tuple[str, ...] = ()) -> LearnerGroup:
        """The ranks' processes, placed as ``start`` places them, before their spec is known: each imports
        ``imports`` meanwhile; ``setup`` then builds them."""
        resources = dict(resources or {})
        n = train.world_size
        options = {"num_cpus": train.num_cpus, "num_gpus": train.num_gpus, "runtime_env": {"env_vars": env_vars},
                   "resources": resources}
        if n > 1:
            bundle = {"CPU": max(train.num_cpus, 0.01), **({"GPU": train.num_gpus} if train.num_gpus else {}),
                      **resources}
            group = placement_group([bundle] * n, strategy=strategy)
            ranks = [LearnerWorker.options(**options, scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=r)).remote(r, n, imports) for r in range(n)]
        else:
            group, ranks = None, [LearnerWorker.options(**options).remote(0, 1, imports)]
        return cls(ranks, [], group)

    def setup(self, spec: LearnerSpec) -> LearnerGroup:
        """Every rank built from ``spec`` at once (rank 0 names the rendezvous); ``ready``: their setup refs."""
        address = self.members[0].address.remote() if len(self.members) > 1 else None
        self.ready = [r.setup.remote(address, spec) for r in self.members]
        return self

    def begin_iteration(self, batch) -> list:
        batch = ray.put(batch)  # once into the object store, not once per rank
        return [r.begin_iteration.remote(batch) for r in self.members]

    def stop(self) -> None:
        for r in self.members:
            ray.kill(r)
        if self.group is not None:
            ray.util.remove_placement_group(self.group)
