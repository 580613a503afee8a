"""Bucketed weight sync: whole layers per bucket, size-bounded, lossless; a generator synced in place generates
what one started from the same weights does."""

from __future__ import annotations

import pytest
import torch

from selfplay.core.lm import load_causal_lm
from selfplay.policy.engines import HFGenerator
from selfplay.policy.object_store_sync import Bucket, TensorMeta, layer_groups, pack, plan_buckets
from tests.policy.test_engines import engine_spec

NAMES = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
         "model.layers.1.self_attn.q_proj.weight", "model.layers.1.input_layernorm.weight",
         "model.layers.10.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"]


def test_layer_groups_keep_each_layer_whole_in_order():
    assert layer_groups(NAMES) == [NAMES[:1], NAMES[1:3], NAMES[3:5], NAMES[5:6], NAMES[6:]]
    assert layer_groups(["a.weight", "b.weight"]) == [["a.weight", "b.weight"]]


def test_buckets_never_split_a_layer_and_respect_the_size():
    metas = [TensorMeta(n, torch.float32, (10, 10)) for n in NAMES]  # 400 bytes each
    buckets = plan_buckets(metas, bucket_bytes=1300)  # groups of 400, 800, 800, 400, 800 bytes
    assert [[m.name for m in b] for b in buckets] == [NAMES[:3], NAMES[3:6], NAMES[6:]]
    assert [m for b in buckets for m in b] == metas  # every tensor once, in order
    assert all(sum(m.nbytes for m in b) <= 1300 for b in buckets)
    # a layer larger than the bucket goes alone; one huge bucket holds everything
    assert len(plan_buckets(metas, bucket_bytes=1)) == 5
    assert len(plan_buckets(metas, bucket_bytes=10**9)) == 1


def test_pack_round_trips_every_dtype_and_refuses_a_mismatch():
    tensors = {"a.0.w": torch.randn(3, 4), "a.0.b": torch.arange(5, dtype=torch.int64),
               "a.1.w": torch.randn(2, 2).to(torch.bfloat16), "norm": torch.tensor(1.5, dtype=torch.float16)}
    metas = [TensorMeta(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    bucket = pack(metas, tensors.__getitem__)
    assert bucket.data.nbytes == sum(m.nbytes for m in metas) == 48 + 40 + 8 + 2
    out = dict(bucket.tensors())
    assert out.keys() == tensors.keys()
    for n, t in tensors.items():
        assert out[n].dtype == t.dtype and torch.equal(out[n], t), n
    assert pack(metas, tensors.__getitem__, keep=False) is None
    with pytest.raises(ValueError, match="a.0.w: got torch.float32 \\(3, 4\\), the plan says torch.float32 \\(4, 3\\)"):
        pack([TensorMeta("a.0.w", torch.float32, (4, 3))], tensors.__getitem__)


def buckets_of(model: torch.nn.Module, bucket_bytes: int) -> list[Bucket]:
    return buckets_of_state(model.state_dict(), bucket_bytes)


def test_hf_generator_loads_buckets_in_place(tiny_policy):
    gen = HFGenerator(engine_spec(tiny_policy, tiny_policy, "hf", batch_size=8))
    target = load_causal_lm(tiny_policy, "float32")
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    buckets = buckets_of(target, bucket_bytes=20_000)
    assert len(buckets) > 2
    for b in buckets:
        gen.load_bucket(b)
    for name, t in target.state_dict().items():
        assert torch.equal(gen.model.state_dict()[name], t), name
    with pytest.raises(KeyError, match="no tensor 'model.extra.weight'"):
        gen.load_bucket(pack([TensorMeta("model.extra.weight", torch.float32, (1,))], lambda n: torch.ones(1)))


def perturbed_world_policy(world, path) -> torch.nn.Module:
    """The world's policy with every weight scaled by 1 + 0.3 N(0, 1) (seed 0), also saved to ``path``."""
    target = load_causal_lm(world.policy, "float32")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in target.parameters():
            p.mul_(1.0 + 0.3 * torch.randn_like(p))
    target.save_pretrained(path)
    return target


def greedy(actor, world) -> list[list[int]]:
    """Greedy response ids of a Generator actor on three fixed prompts."""
    import ray

    from selfplay.core.lm import encode_prompt, load_tokenizer

    tok = load_tokenizer(world.tokenizer)
    prompts = [encode_prompt(tok, [{"role": "user", "content": c}])
               for c in ("Tell me about apples.", "What is bread?", "Describe the sea.")]
    return [g[0].response_ids for g in ray.get(actor.generate.remote(prompts, 1, 0.0, 1.0, 16, 0))]


def test_vllm_generator_synced_in_buckets_generates_like_a_fresh_engine_with_one_rank_or_two(world, ray_cluster,
                                                                                            tmp_path):
    """Greedy samples of an engine synced bucket by bucket (many small buckets) == those of an engine started
    from the same weights on disk; and they differ from the engine's before the sync.  With
    generator.tensor_parallel=2 on the CPU (its workers bound to this machine's cores, one each), the samples
    before and after the sync equal the one-rank engine's (heads and MLP split over two ranks, the partial sums
    all-reduced)."""
    import ray

    from actors.generator import GenerationWorker

    buckets = buckets_of(perturbed_world_policy(world, tmp_path / "target"), bucket_bytes=200_000)
    assert len(buckets) >= 3
    # the three engines start at once (a TP = 2 engine's start is mostly waiting on its workers)
    engines = {tp: GenerationWorker.remote(engine_spec(world.policy, world.tokenizer, tensor_parallel=tp))
               for tp in (1, 2)}
    fresh = GenerationWorker.remote(engine_spec(str(tmp_path / "target"), world.tokenizer))
    runs = {}
    for tp, synced in engines.items():
        before = greedy(synced, world)
        ray.get([synced.load_bucket.remote(ray.put(b)) for b in buckets])
        ray.get(synced.finish_sync.remote())
        runs[tp] = before, greedy(synced, world)
        ray.kill(synced)
    expected = greedy(fresh, world)
    ray.kill(fresh)
    before, after = runs[1]
    assert after == expected
    assert after != before
    assert runs[2] == runs[1]


def test_hf_generator_sleeping_at_level_2_holds_no_weights_until_a_sync(world):
    """Colocated mode, level 2: sleep frees every checkpoint tensor (none is left holding memory), waking gives
    them back uninitialised at their shapes, and one full sync restores the greedy output exactly; the
    rotary buffers, which no checkpoint carries, survive.  Level 1 keeps the weights."""
    from selfplay.core.lm import encode_prompt, load_tokenizer

    gen = HFGenerator(engine_spec(world.policy, world.tokenizer, "hf", batch_size=8))
    tok = load_tokenizer(world.tokenizer)
    prompts = [encode_prompt(tok, [{"role": "user", "content": c}]) for c in ("Tell me about apples.", "What is bread?")]

    def greedy_ids() -> list[list[int]]:
        return [g[0].response_ids for g in gen.generate(prompts, 1, 0.0, 1.0, 12, 0)]

    before = greedy_ids()
    weights = {n: t.clone() for n, t in gen.model.state_dict().items()}
    gen.sleep(1)
    gen.wake_up()
    assert greedy_ids() == before

    rotary = {n: b.clone() for n, b in gen.model.named_buffers() if n not in weights}
    assert rotary  # the rotary frequencies: a buffer outside the checkpoint
    gen.sleep(2)
    assert all(t.numel() == 0 for t in gen.model.state_dict().values())
    gen.wake_up()
    assert {n: tuple(t.shape) for n, t in gen.model.state_dict().items()} == {n: tuple(t.shape) for n, t in weights.items()}
    for b in buckets_of_state(weights, bucket_bytes=200_000):
        gen.load_bucket(b)
    assert greedy_ids() == before
    assert all(torch.equal(b, dict(gen.model.named_buffers())[n]) for n, b in rotary.items())


def buckets_of_state(state: dict[str, torch.Tensor], bucket_bytes: int) -> list[Bucket]:
    plan = plan_buckets([TensorMeta(n, t.dtype, tuple(t.shape)) for n, t in state.items()], bucket_bytes)
    return [pack(b, state.__getitem__) for b in plan]
