"""The memory plan: each actor's needs by hand, and a run that cannot fit refused before any actor starts."""

from __future__ import annotations

import shutil
import time

import pytest
from transformers import LlamaConfig

from selfplay.config.loading import load_config
from selfplay.config.memory import GB, ModelShape, generator_need, learner_need, plan
from selfplay.plan import main as plan_main
from selfplay.run import main as run_main

SHAPE = ModelShape(params=1_000_000, layers=4, hidden=64, vocab=100, kv_heads=2, head_dim=32)


def test_learner_needs_by_hand():
    cfg = load_config(["train.micro_batch_size=2", "generator.max_model_len=10"])
    need = learner_need(cfg, SHAPE)  # float32, one rank: 4 + 4 + 8 bytes a parameter
    assert (need.parts["weights"], need.parts["gradients"], need.parts["optimizer"]) == (4e6, 4e6, 8e6)
    # 17 s b h values a block, 4 bytes each, 4 blocks; logits 4 s b V (GPO: one sequence an example)
    assert need.parts["activations"] == 4 * 17 * 10 * 2 * 64 * 4 + 4 * 10 * 2 * 100
    sharded = learner_need(load_config(["train.world_size=4", "dpo"]), SHAPE)
    assert (sharded.parts["weights"], sharded.parts["optimizer"], sharded.parts["reference"]) == (1e6, 2e6, 1e6)
    assert sharded.count == 4
    offload = learner_need(load_config(["train.world_size=4", "train.num_gpus=1", "train.cpu_offload=true"]), SHAPE)
    assert "optimizer" not in offload.parts and offload.cpu_parts["optimizer"] == 2e6
    assert offload.parts["gathered blocks"] == 2 * 4 * 1e6 / 4


def test_lora_learner_needs_by_hand():
    shape = ModelShape(1_000_000, 4, 64, 100, 2, 32, linears=(("q_proj", 64, 64), ("v_proj", 64, 16), ("o_proj", 64, 64)))
    need = learner_need(load_config(["dpo", "train.lora.rank=8", "train.lora.target_modules=[q_proj,v_proj]"]), shape)
    adapters = 8 * (64 + 64) + 8 * (64 + 16)  # r (in + out) per target layer
    assert (need.parts["weights"], need.parts["gradients"], need.parts["optimizer"]) == (4e6, 4 * adapters, 8 * adapters)
    assert "reference" not in need.parts  # pi_0 is the base with the adapters off


def test_generator_needs_by_hand():
    need = generator_need(load_config(["generator.tensor_parallel=2", "generator.max_model_len=100"]), SHAPE)
    assert need.parts["weights"] == 2e6  # 4 bytes x 1e6 over 2 devices
    assert need.parts["KV cache (one full sequence)"] == 2 * 4 * 2 * 32 * 4 / 2 * 100
    assert need.count == 2


def test_vllms_weight_transfer_adds_its_two_buffers_on_each_side():
    gpus = ["generator.num_gpus=1", "train.num_gpus=1", "sync.bucket_mb=128"]
    for need in (learner_need(load_config(gpus), SHAPE), generator_need(load_config(gpus), SHAPE)):
        assert "transfer buffers" not in need.parts  # the object store's buckets are in host memory
    nccl = load_config([*gpus, "sync.transport=nccl"])
    for need in (learner_need(nccl, SHAPE), generator_need(nccl, SHAPE)):
        assert need.parts["transfer buffers"] == 2 * 128 * 2**20


def test_colocated_learner_gets_the_whole_gpu_but_must_leave_the_generators_theirs():
    """Colocated, the generators sleep while the learner trains, so its capacity is the whole GPU (not its
    share); its resident states (16 MB here) stay beside the generators' reservation while they run."""
    from selfplay.config.memory import problems, with_capacity

    base = ["train.num_gpus=0.5", "generator.num_gpus=0.5", "scorer.num_gpus=0.1", "generator.backend=vllm"]

    def check(extra: list[str], gpu_bytes: float) -> tuple[float, list[str]]:
        cfg = load_config(base + extra)
        needs = with_capacity([learner_need(cfg, SHAPE), generator_need(cfg, SHAPE)], cfg, gpu_bytes, 64 * GB)
        return needs[0].capacity, problems(needs, cfg, gpu_bytes, 64 * GB)

    assert check([], 1 * GB)[0] == 0.5 * GB
    assert check(["placement.colocate=true"], 1 * GB) == (1 * GB, [])
    # 16 MB of learner states + 0.9 x 100 MB of vLLM reservation > 100 MB
    capacity, found = check(["placement.colocate=true", "generator.gpu_memory_utilization=0.9",
                             "generator.max_model_len=8", "train.micro_batch_size=1"], 100e6)
    assert capacity == 100e6
    assert found == ["colocated, a learner rank keeps 16 MB on its GPU while the generators run there with 90 MB "
                     "(generator.gpu_memory_utilization=0.9 of 100 MB): lower generator.gpu_memory_utilization, "
                     "raise train.world_size or set train.cpu_offload=true"]


@pytest.fixture(scope="module")
def llama_8b(world, tmp_path_factory):
    """An 8B Llama's Hugging Face config (Llama-3-8B's shape) with the world's tokenizer: no weights."""
    path = tmp_path_factory.mktemp("llama8b")
    LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256).save_pretrained(path)
    shutil.copytree(world.tokenizer, path, dirs_exist_ok=True)
    return str(path)


def test_an_8b_full_finetune_on_one_80gb_gpu_is_refused_in_seconds(world, llama_8b, tmp_path, capsys):
    gpu = ["train.num_gpus=1", "generator.num_gpus=1", "scorer.num_gpus=1", "placement.gpu_memory_gb=80",
           "generator.gpu_memory_utilization=0.8",
           f"policy.model={llama_8b}", f"scorer.model={world.gpm}", f"run.dir={tmp_path / 'run'}"]
    start = time.perf_counter()
    assert run_main(gpu) == 2
    assert time.perf_counter() - start < 5.0
    err = capsys.readouterr().err
    assert "the plan does not fit: a learner rank needs" in err and "raise train.world_size" in err
    assert not (tmp_path / "run").exists()
    # eight ranks with activation checkpointing and small micro-batches fit
    fits = [*gpu, "train.world_size=8", "train.batch_size=64", "train.micro_batch_size=2",
            "train.activation_checkpointing=true"]
    assert plan_main(fits) == 0
    needs, problems = plan(load_config(fits), llama_8b, world.gpm)
    assert problems == []
    learner = needs[0]
    assert 8.0e9 < learner.parts["optimizer"] * 8 / 8 < 8.1e9  # 8.03B parameters x 8 bytes / 8 ranks
    assert learner.capacity == 80 * GB


def test_the_default_world_run_fits_and_an_unreadable_model_is_named(world, tmp_path, capsys):
    assert plan_main([]) == 0
    assert "learner rank" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert plan_main([f"policy.model={tmp_path / 'empty'}", f"scorer.model={world.gpm}"]) == 2
    assert f"cannot read the Hugging Face config of the policy '{tmp_path / 'empty'}'" in capsys.readouterr().err


def test_scorer_weights_in_scorer_dtype_and_pairrm_shaped_by_its_base_model(world, llama_8b, tmp_path):
    """scorer.dtype=auto: bf16 weights on a GPU (2 bytes a parameter), float32 on the CPU; an explicit dtype wins.
    PairRM's RankerConfig layout is measured on its base model's config (its own config.json would read as a
    DeBERTa v1 of another size), and its sequences as 1224 + 2 x 412 tokens, whatever the generator writes."""
    from tests.models.test_pairrm import ranker_layout

    def scorer(args: list[str], scorer_model: str):
        return plan(load_config(args), llama_8b, scorer_model)[0][2]

    gpu = ["scorer.num_gpus=1", "placement.gpu_memory_gb=80"]
    shape = ModelShape.of(llama_8b, causal_lm=False)
    assert scorer(gpu, llama_8b).parts["weights"] == 2 * shape.params
    assert scorer([], llama_8b).parts["weights"] == 4 * shape.params
    assert scorer([*gpu, "scorer.dtype=float32"], llama_8b).parts["weights"] == 4 * shape.params
    path, base, _ = ranker_layout(tmp_path)
    pairrm = scorer([f"scorer.model={path}", "scorer.kind=pairrm"], str(path))
    assert pairrm.parts["weights"] == 4 * ModelShape.of(str(base), causal_lm=False).params
    hidden = ModelShape.of(str(base), causal_lm=False).hidden
    assert pairrm.parts["activations"] == 4 * 64 * 2048 * hidden * 4
