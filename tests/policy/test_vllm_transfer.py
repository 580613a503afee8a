"""vLLM's native weight transfer (``sync.transport=nccl|ipc``): our weight source, the client over the generator
actors, the config's refusals, and the whole NCCL protocol on CPU with its data plane swapped
(``loopback_transfer``): learner -> two vLLM generators -> they generate like an engine started from the weights."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from actors.generator import GeneratorsClient
from selfplay.config.loading import load_config
from selfplay.config.schema import ConfigError, TrainConfig
from selfplay.policy.specs import LearnerSpec
from selfplay.policy.trainer import PolicyTrainer
from selfplay.policy.object_store_sync import TensorMeta
from selfplay.policy.vllm_transfer import learner_source, trainer_engine
from tests.policy.loopback_transfer import patch_trainer, patch_worker
from tests.policy.test_engines import engine_spec
from tests.policy.test_lora import lora_learner
from tests.policy.test_object_store_sync import greedy, perturbed_world_policy

REPO = str(Path(__file__).resolve().parents[2])


def learner_of(policy: str, tokenizer: str | None = None) -> PolicyTrainer:
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"batch_size": 4, "micro_batch_size": 2})
    return PolicyTrainer(LearnerSpec(policy, tokenizer or policy, "float32", cfg, load_config([]).algo, seed=0))


def source_of(learner: PolicyTrainer, dtype: torch.dtype | None = None):
    exported = learner._exported()
    metas = [TensorMeta(n, t.dtype, tuple(t.shape)) for n, (t, _) in exported.items()]
    return learner_source(metas, lambda: {n: f for n, (_, f) in learner._exported().items()}, torch.device("cpu"),
                          dtype)


def test_the_source_declares_what_it_yields_and_sends_the_merged_lora_weights(tiny_policy):
    """vLLM's own check (declared metadata == iteration, name by name) passes on a fresh pass each round, in both
    of vLLM's spellings (``metadata`` / ``metadata()``); with LoRA the tensors are the merged ones
    (W + scaling B A), cast to the serving dtype."""
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine

    learner = lora_learner(tiny_policy)
    with torch.no_grad():  # B starts at zero: make the merge visible
        for name, p in learner.model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)
    merged = {n: f() for n, (_, f) in learner._exported().items()}
    source = source_of(learner, torch.bfloat16)
    assert source.metadata() is source.metadata and len(source.metadata) == len(merged)
    for _ in range(2):
        sent = dict(NCCLTrainerWeightTransferEngine._checked_iter(source, source.metadata))
        assert sent.keys() == merged.keys()
        for name, t in sent.items():
            assert t.dtype == torch.bfloat16 and torch.equal(t, merged[name].to(torch.bfloat16)), name
    base = {n: p for n, p in learner.model.get_base_model().named_parameters() if "lora" not in n}
    q = next(n for n in merged if n.endswith("q_proj.weight"))
    assert not torch.equal(merged[q], base[q.replace("q_proj.weight", "q_proj.base_layer.weight")])


def test_a_rank_other_than_0_only_helps_gather(tiny_policy):
    """Learner ranks other than 0 iterate the source (FSDP's gathers are collectives) but never call the
    generators and open no connection."""

    class Refuse:
        def __getattr__(self, name):
            raise AssertionError(f"rank 1 called the generators ({name})")

    learner = learner_of(tiny_policy)
    source = source_of(learner)
    pulled = []
    original = type(source).iter_full

    def counting(self):
        for name, t in original(self):
            pulled.append(name)
            yield name, t

    type(source).iter_full = counting
    engine = trainer_engine("nccl", 1, Refuse(), source, 2, 2**20, None)
    engine.send_weights()
    assert pulled == [m.name for m in source.metadata]


@pytest.fixture
def fake_engines(ray_cluster):
    import ray

    @ray.remote(max_concurrency=2)  # threaded: its log answers while a hung update sleeps
    class FakeEngine:
        """Records the four calls; ``hang`` stalls the update."""

        def __init__(self, hang: bool = False):
            self.calls, self.hang = [], hang

        def init_weight_transfer_engine(self, info):
            self.calls.append(("init", info))

        def start_weight_update(self):
            self.calls.append(("start",))

        def update_weights(self, info):
            if self.hang:
                time.sleep(30)
            self.calls.append(("update", info))

        def finish_weight_update(self):
            self.calls.append(("finish",))

        def log(self):
            return self.calls

    engines = [FakeEngine.remote(), FakeEngine.remote(hang=True)]
    yield engines
    for e in engines:
        ray.kill(e)


def test_the_client_numbers_each_generators_workers_and_names_one_that_hangs(fake_engines):
    import ray

    client = GeneratorsClient(fake_engines, ranks_each=2, timeout_s=2.0)
    client.init_weight_transfer_engine({"master_port": 5, "rank_offset": 1, "world_size": 5})
    client.start_weight_update()
    with pytest.raises(TimeoutError, match=r"^weight sync: generator 1 did not answer within 2 s$"):
        client.update_weights({"names": ["a"]})
    first = ray.get(fake_engines[0].log.remote())
    assert first == [("init", {"master_port": 5, "rank_offset": 1, "world_size": 5}), ("start",),
                     ("update", {"names": ["a"]})]
    assert ray.get(fake_engines[1].log.remote(), timeout=60)[0] == ("init", {"master_port": 5, "rank_offset": 3,
                                                                             "world_size": 5})


@pytest.mark.parametrize(("overrides", "message"), [
    (["sync.transport=rdma"], "sync.transport must be one of ('object_store', 'nccl', 'ipc'), got 'rdma'"),
    (["sync.transport=nccl"], "sync.transport=nccl is vLLM's GPU-to-GPU weight transfer: it needs"),
    (["sync.transport=nccl", "generator.num_gpus=1", "train.num_gpus=1", "generator.backend=hf"],
     "sync.transport=nccl is vLLM's GPU-to-GPU weight transfer"),
    (["sync.transport=ipc", "generator.num_gpus=0.5", "train.num_gpus=0.5"], "it needs placement.colocate=true"),
    (["sync.transport=nccl", "generator.num_gpus=0.5", "train.num_gpus=0.5", "placement.colocate=true"],
     "with placement.colocate=true use ipc"),
])
def test_the_config_refuses_a_transport_that_cannot_work(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides)


def test_gpu_transports_validate_with_gpus():
    assert load_config(["sync.transport=nccl", "generator.num_gpus=1", "train.num_gpus=1"]).sync.transport == "nccl"
    load_config(["sync.transport=ipc", "generator.num_gpus=0.5", "train.num_gpus=0.5", "placement.colocate=true"])


def test_the_nccl_protocol_end_to_end_on_cpu(world, ray_cluster, tmp_path):
    """Two sharded learner ranks -> two vLLM generators over vLLM's NCCL weight-transfer protocol (its data plane
    through the TCP store, ``loopback_transfer``), driven by the loop's own ``connect_weight_transfer`` and
    ``sync_weights``, twice: rank 1 only helps gather, and both generators then generate greedily exactly what an
    engine started from the learner's weights does, and not what they did before."""
    import ray

    from actors.generator import GenerationWorker
    from actors.group import wait
    from actors.learner import LearnerGroup
    from selfplay.config.schema import Config
    from selfplay.loop.sync import connect_weight_transfer, sync_weights
    from selfplay.loop.workers import Workers

    cfg = OmegaConf.structured(Config)  # validation would refuse nccl without GPUs: the data plane here needs none
    cfg.sync.transport, cfg.sync.bucket_mb, cfg.sync.timeout_s = "nccl", 0.2, 120.0
    cfg.train.world_size, cfg.train.batch_size = 2, 4
    target = str(tmp_path / "target")
    perturbed_world_policy(world, target)
    env = {"env_vars": {"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}}
    generators = [GenerationWorker.options(runtime_env=env).remote(
        engine_spec(world.policy, world.tokenizer, weight_transfer="nccl")) for _ in range(2)]
    learner = LearnerGroup.start(LearnerSpec(target, world.tokenizer, "float32", cfg.train, load_config([]).algo, 0),
                                 env["env_vars"])
    try:
        wait(learner.ready)
        before = greedy(generators[0], world)
        ray.get([g.__ray_call__.remote(lambda _: patch_worker()) for g in generators])  # in their processes
        ray.get([r.__ray_call__.remote(lambda _: patch_trainer()) for r in learner.ranks])
        workers = Workers(generators, None, learner)
        connect_weight_transfer(workers, cfg)
        assert sync_weights(workers, cfg) > 1  # buffers of 0.2 MB
        after = [greedy(g, world) for g in generators]
        sync_weights(workers, cfg)  # a second round: a fresh pass of the source, the same weights
        again = greedy(generators[1], world)
    finally:
        learner.stop()
        for g in generators:
            ray.kill(g)
    fresh = GenerationWorker.remote(engine_spec(target, world.tokenizer))
    expected = greedy(fresh, world)
    ray.kill(fresh)
    assert after == [expected, expected] and again == expected
    assert expected != before
