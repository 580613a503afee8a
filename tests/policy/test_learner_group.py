"""The learner group: train.world_size ranks (FSDP2 shards over gloo on the CPU) train exactly like one process."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from actors.group import leader, wait
from actors.learner import LearnerGroup
from selfplay.config.loading import load_config
from selfplay.config.schema import TrainConfig
from selfplay.core.batch import Batch
from selfplay.core.lm import load_causal_lm
from selfplay.policy.specs import LearnerSpec


def batch_of(n: int, reference: str | None = "previous") -> Batch:
    """n single-sequence examples (GPO's all-K form; DPA's SFT rows with no reference)."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(10, 200, (3 + i % 3,), generator=g).tolist() for i in range(n)]
    responses = [torch.randint(10, 200, (2 + i % 4,), generator=g).tolist() for i in range(n)]
    return Batch.examples([f"1/{i}" for i in range(n)], prompts, responses, torch.linspace(-1, 1, n), 1, reference)


def pair_batch(n: int) -> Batch:
    """n (chosen, rejected) examples against pi_0 (DPO)."""
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(10, 200, (3 + i % 2,), generator=g).tolist() for i in range(n)]
    responses = [torch.randint(10, 200, (2 + (i + j) % 3,), generator=g).tolist() + [2] for i in range(n) for j in (0, 1)]
    return Batch.examples([f"1/{i}" for i in range(n)], prompts, responses, torch.zeros(2 * n), 2, "initial")


def train_group(policy: str, world_size: int, algo: str, batch: Batch, epochs: int = 2, iterations=(1,),
                save_to: str | None = None, dtype: str = "float32", **train) -> tuple[list, dict]:
    """Each epoch's training stats (the last iteration's) and the final full weights of ``world_size`` ranks,
    with weights and optimizer in ``dtype``; with ``save_to``, the group's checkpoint written there."""
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig),
                          {"lr": 1e-4, "epochs": epochs, "batch_size": 4, "micro_batch_size": 2,
                           "world_size": world_size, **train})
    scorer = ["scorer.kind=multi_objective"] if algo == "dpa" else []
    spec = LearnerSpec(policy, policy, dtype, cfg, load_config([f"algo={algo}", *scorer]).algo, 0)
    group = LearnerGroup.start(spec, {"OMP_NUM_THREADS": "1"})
    try:
        wait(group.ready)
        for t in iterations:
            leader(group.begin_iteration(batch))
            stats = [leader(group.train_epoch(e, t)) for e in range(epochs)]
        if save_to is not None:
            leader(group.save(save_to))
        return stats, synced_weights(group)
    finally:
        group.stop()


def synced_weights(group: LearnerGroup, bucket_bytes: int = 50_000) -> dict[str, torch.Tensor]:
    """The full weights as the generators get them: bucket by bucket from rank 0 (the other ranks gather)."""
    out = {}
    for i in range(leader(group.plan_sync(bucket_bytes))):
        out.update({n: t.clone() for n, t in leader(group.weight_bucket(i)).tensors()})
    return out


def assert_same_weights(a: dict, b: dict, rel: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name, w in a.items():
        assert b[name].shape == w.shape, name
        assert (b[name] - w).norm() <= rel * w.norm(), name


CASES = [("gpo", batch_of(10)), ("dpo", pair_batch(6))]


@pytest.mark.parametrize(("algo", "batch"), CASES)
def test_two_ranks_train_like_one(ray_cluster, tiny_policy, algo, batch):
    """Same global batch and seed, in float64: per-step losses, metrics and final weights agree to 1e-10
    relative.  Steps of 4 examples over 10 (GPO) or 6 pairs (DPO, its reference pi_0 sharded too): the last
    step is short, so one rank's share of it runs out; micro-batches of 2.  In float64 the only difference
    between the two, the order of the sums (a gradient all-reduced over gloo against one process's sum), is
    ~1e-16 relative, and Adam's normalisation of near-zero gradients cannot lift it to 1e-10: any logic error
    (a rank's share dropped or counted twice, a wrong normaliser) is orders of magnitude larger."""
    one_stats, one = train_group(tiny_policy, 1, algo, batch, dtype="float64")
    two_stats, two = train_group(tiny_policy, 2, algo, batch, dtype="float64")
    assert len(one_stats[0]["step_losses"]) == -(-len(batch) // 4)
    for a, b in zip(one_stats, two_stats):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-10, abs=1e-12), key
    assert_same_weights(one, two, rel=1e-10)
    initial = load_causal_lm(tiny_policy, "float64").state_dict()
    assert sum(not torch.equal(initial[n], w) for n, w in one.items()) > len(one) // 2  # training moved them


@pytest.mark.parametrize(("algo", "batch"), CASES)
def test_two_ranks_in_float32_within_rounding(ray_cluster, tiny_policy, algo, batch):
    """The float32 smoke check, with bounds derived from float32's epsilon and the step count, not measured.

    - The first step's loss is a forward pass of identical weights: its relative error is at most that of the
      longest sum inside it, n eps with n the vocabulary (the log-softmax's sum; Higham's gamma_n).
    - After S AdamW steps each weight has moved at most S lr (1 - beta1) / sqrt(1 - beta2) (Kingma & Ba 2015,
      sec. 2.1; here 3.2 lr a step): rounding can flip the sign of a near-zero gradient, so two runs may differ by
      twice that, and by no more (weight decay is 0 here)."""
    lr = 1e-4
    one_stats, one = train_group(tiny_policy, 1, algo, batch)
    two_stats, two = train_group(tiny_policy, 2, algo, batch)
    vocab = load_causal_lm(tiny_policy, "float32").config.vocab_size
    eps = torch.finfo(torch.float32).eps
    first_one, first_two = one_stats[0]["step_losses"][0], two_stats[0]["step_losses"][0]
    assert abs(first_two - first_one) <= vocab * eps * abs(first_one)
    steps = sum(len(s["step_losses"]) for s in one_stats)
    per_step = lr * (1 - 0.9) / (1 - 0.999) ** 0.5
    assert one.keys() == two.keys()
    for name, w in one.items():
        assert (two[name] - w).abs().max() <= 2 * steps * per_step * (1 + 1e-3), name


LORA = {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def test_two_ranks_train_lora_like_one(ray_cluster, tiny_policy, tmp_path):
    """LoRA on shards: the adapters sharded with their layers (A drawn alike on every rank), pi_0 the base with
    the adapters off, the merged weights gathered for the generators and the checkpoint; losses and merged
    weights as one process's within 1e-5, and the checkpoint's adapter gives the same merged model."""
    from peft import PeftModel

    one_stats, one = train_group(tiny_policy, 1, "dpo", pair_batch(6), lora=LORA)
    two_stats, two = train_group(tiny_policy, 2, "dpo", pair_batch(6), save_to=str(tmp_path / "iter_1"), lora=LORA)
    for a, b in zip(one_stats, two_stats):
        assert b["step_losses"] == pytest.approx(a["step_losses"], rel=1e-5, abs=1e-7)
    assert_same_weights(one, two)
    initial = load_causal_lm(tiny_policy, "float32").state_dict()
    moved = {n for n, w in one.items() if not torch.equal(initial[n], w)}
    assert moved == {f"model.layers.0.{m}.weight" for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")}
    assert_same_weights(two, load_causal_lm(str(tmp_path / "iter_1"), "float32").state_dict())
    adapted = PeftModel.from_pretrained(load_causal_lm(tiny_policy, "float32"), str(tmp_path / "iter_1" / "adapter"))
    assert_same_weights(two, adapted.merge_and_unload().state_dict())


def test_sharded_restart_from_pi0(ray_cluster, tiny_policy):
    """DPA's algo.init=sft: every iteration starts again from pi_0, loaded into the shards."""
    _, two = train_group(tiny_policy, 2, "dpa", batch_of(8, reference=None), epochs=1, iterations=(1, 2))
    _, only_second = train_group(tiny_policy, 1, "dpa", batch_of(8, reference=None), epochs=1, iterations=(2,))
    assert_same_weights(only_second, two)  # iteration 1's training was undone: 2 started from pi_0
