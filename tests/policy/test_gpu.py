"""GPU-only checks (``python -m pytest -m gpu`` on a GPU machine; the README's test command excludes them):
the learner in bf16 on a GPU, bucketed sync into a vLLM engine on the GPU, its sleep mode, and vLLM's IPC weight
transfer."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from selfplay.config.schema import TrainConfig
from selfplay.core.lm import load_causal_lm
from selfplay.policy.specs import LearnerSpec
from selfplay.policy.trainer import PolicyTrainer
from tests.policy.test_engines import engine_spec
from tests.policy.test_learner_group import batch_of
from tests.policy.test_object_store_sync import buckets_of, greedy, perturbed_world_policy

pytestmark = pytest.mark.gpu


def test_learner_trains_in_bf16_on_the_gpu(world):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    from selfplay.config.loading import load_config

    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"lr": 1e-3, "epochs": 1, "batch_size": 4,
                                                             "micro_batch_size": 2, "mixed_precision": "bf16"})
    learner = PolicyTrainer(LearnerSpec(world.policy, world.tokenizer, "float32", cfg, load_config([]).algo, 0))
    assert learner.placement.device.type == "cuda"
    learner.begin_iteration(batch_of(8))
    stats = learner.train_epoch(0, iteration=1)
    assert all(torch.isfinite(torch.tensor(stats["step_losses"])))
    before = load_causal_lm(world.policy, "float32").state_dict()
    after = learner.placement.full_state_dict(learner.model)
    assert sum(not torch.equal(before[n], t) for n, t in after.items()) > len(after) // 2


def test_vllm_on_the_gpu_synced_in_buckets_generates_like_a_fresh_engine(world, ray_cluster, tmp_path):
    import ray

    from actors.generator import GenerationWorker

    target = perturbed_world_policy(world, tmp_path / "target")
    synced = GenerationWorker.options(num_gpus=1).remote(engine_spec(world.policy, world.tokenizer))
    ray.get([synced.load_bucket.remote(ray.put(b)) for b in buckets_of(target, 200_000)])
    ray.get(synced.finish_sync.remote())
    after = greedy(synced, world)
    ray.kill(synced)
    fresh = GenerationWorker.options(num_gpus=1).remote(engine_spec(str(tmp_path / "target"), world.tokenizer))
    assert after == greedy(fresh, world)
    ray.kill(fresh)


@pytest.mark.parametrize("level", [1, 2])
def test_vllm_sleeps_and_wakes_on_the_gpu(world, ray_cluster, level):
    """Colocated mode: after a sleep and a wake at level 1, and at level 2 followed by a full bucketed sync (the
    loop's order), the engine generates greedily what it did before."""
    import ray

    from actors.generator import GenerationWorker

    gen = GenerationWorker.options(num_gpus=1).remote(engine_spec(world.policy, world.tokenizer, sleep_mode=True))
    before = greedy(gen, world)
    ray.get(gen.sleep.remote(level))
    ray.get(gen.wake_up.remote())
    if level == 2:
        ray.get([gen.load_bucket.remote(ray.put(b)) for b in buckets_of(load_causal_lm(world.policy), 200_000)])
        ray.get(gen.finish_sync.remote())
    assert greedy(gen, world) == before
    ray.kill(gen)


def test_vllm_on_the_gpu_gets_the_learners_weights_over_ipc(world, ray_cluster, tmp_path):
    """``sync.transport=ipc`` (colocated: the learner and the engine on one GPU): after vLLM's IPC weight transfer
    from a learner holding other weights, the engine generates greedily what an engine started from them does.
    (NCCL needs the two on different GPUs; its protocol runs on CPU in test_vllm_transfer.)"""
    import ray

    from actors.generator import GenerationWorker, GeneratorsClient
    from tests.policy.test_vllm_transfer import learner_of

    perturbed_world_policy(world, tmp_path / "target")
    spec = engine_spec(world.policy, world.tokenizer, weight_transfer="ipc", gpu_memory_utilization=0.3)
    gen = GenerationWorker.options(num_gpus=0.5).remote(spec)
    learner = learner_of(str(tmp_path / "target"), world.tokenizer)
    assert learner.placement.device.type == "cuda"
    learner.connect_generators("ipc", GeneratorsClient([gen], 1, 300.0), 1, 2**20, None, torch.float32)
    learner.send_weights()
    after = greedy(gen, world)
    ray.kill(gen)
    fresh = GenerationWorker.options(num_gpus=0.5).remote(engine_spec(str(tmp_path / "target"), world.tokenizer,
                                                                   gpu_memory_utilization=0.3))
    assert after == greedy(fresh, world)
    ray.kill(fresh)
