"""The learner without Ray: log-prob caching, gradient accumulation, per-iteration optimizer reset, and training
on (chosen, rejected) pairs against pi_0, pi_t or no reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from selfplay.algorithms.registry import check_algo
from selfplay.config.loading import load_config
from selfplay.config.schema import AlgoConfig, TrainConfig
from selfplay.core.batch import Batch
from selfplay.core.lm import load_causal_lm, response_batch, sequence_logprobs
from selfplay.core.optim import lr_multiplier
from selfplay.policy.specs import LearnerSpec
from selfplay.policy.trainer import PolicyTrainer

LOG2 = math.log(2.0)


def make_learner(path: str, **train) -> PolicyTrainer:
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"lr": 1e-2, "epochs": 1, **train})
    algo = OmegaConf.structured(AlgoConfig)
    check_algo(algo)
    return PolicyTrainer(LearnerSpec(path, path, "float32", cfg, algo, seed=0))


def batch_of(n: int) -> Batch:
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(10, 200, (3 + i % 3,), generator=g).tolist() for i in range(n)]
    responses = [torch.randint(10, 200, (2 + i % 4,), generator=g).tolist() for i in range(n)]
    return Batch.examples([f"1/{i}" for i in range(n)], prompts, responses, torch.linspace(-1, 1, n), 1, "previous")


def test_old_logprobs_are_cached_before_training(tiny_policy):
    learner = make_learner(tiny_policy, batch_size=8, micro_batch_size=8)
    batch = batch_of(8)
    learner.begin_iteration(batch)
    assert torch.allclose(batch.ref_logps, learner.logprobs(batch))
    stats = learner.train_epoch(0, iteration=1)
    # at the start log pi_theta = log pi_t, so the GPO loss is the mean squared target
    assert stats["loss"] == pytest.approx((batch.targets ** 2).mean().item(), rel=1e-4)
    assert not torch.allclose(batch.ref_logps, learner.logprobs(batch))  # the weights moved; the cache did not


def test_gradient_accumulation_equals_one_big_batch(tiny_policy):
    """batch 8 in micro-batches of 2 == batch 8 in one pass (TRL's accumulation invariant).

    Compared on the gradient of the one optimizer step (left in .grad after the step): Adam's update
    g / (sqrt(v) + eps) would blow float rounding in near-zero gradients up to the learning rate.
    """
    grads = []
    for micro in (8, 2):
        learner = make_learner(tiny_policy, batch_size=8, micro_batch_size=micro, max_grad_norm=1e9)
        learner.begin_iteration(batch_of(8))
        learner.train_epoch(0, iteration=1)
        grads.append({n: p.grad.clone() for n, p in learner.model.named_parameters()})
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0, name
        scale = grads[0][name].abs().max()
        assert (grads[0][name] - grads[1][name]).abs().max() <= 1e-4 * scale, name  # float rounding only


def test_each_iteration_starts_a_fresh_optimizer(tiny_policy):
    learner = make_learner(tiny_policy, batch_size=4, micro_batch_size=4)
    learner.begin_iteration(batch_of(8))
    learner.train_epoch(0, iteration=1)
    assert len(learner.torch_optimizer.state) > 0
    learner.begin_iteration(batch_of(8))
    assert len(learner.torch_optimizer.state) == 0


# ---- the learner on (chosen, rejected) pairs -------------------------------------------------------------

def make_pair_learner(path: str, algo: str, **train) -> PolicyTrainer:
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig),
                          {"lr": 1e-3, "epochs": 1, "batch_size": 4, "micro_batch_size": 4, **train})
    return PolicyTrainer(LearnerSpec(path, path, "float32", cfg, load_config([f"algo={algo}"]).algo, seed=0))


def pair_batch(reference: str | None, n: int = 4) -> Batch:
    """n (chosen, rejected) examples over token ids 10..200, chosen != rejected."""
    g = torch.Generator().manual_seed(3)
    prompts, responses = [], []
    for i in range(n):
        p = torch.randint(10, 200, (3 + i % 2,), generator=g).tolist()
        w = torch.randint(10, 200, (2 + i % 3,), generator=g).tolist() + [2]
        l = torch.randint(10, 200, (3 + i % 2,), generator=g).tolist() + [2]
        prompts.append(p)
        responses += [w, l]
    return Batch.examples([f"1/{i}" for i in range(n)], prompts, responses, torch.zeros(2 * n), 2, reference)


def independent_logprobs(path: str, batch: Batch) -> torch.Tensor:
    model = load_causal_lm(path).eval()
    with torch.no_grad():
        return sequence_logprobs(model, *response_batch(batch.row_prompt_ids(), batch.response_ids, 0))


def test_learner_dpo_pairs_reference_initial_and_previous(tiny_policy):
    """At the start pi_theta = pi_0, so h_w = h_l = 0 and the DPO loss is -log sigma(0) = log 2 per pair;
    with batch_size = 4 = the number of pairs there is one optimizer step, whose loss is the first one."""
    learner = make_pair_learner(tiny_policy, "dpo", micro_batch_size=2)
    initial = independent_logprobs(tiny_policy, pair_batch("initial"))
    batch = pair_batch("initial")
    info = learner.begin_iteration(batch)
    assert info == {"num_examples": 4.0, "num_sequences": 8.0, "optimizer_steps": 1.0, "world_size": 1}
    torch.testing.assert_close(batch.ref_logps, initial, rtol=1e-5, atol=1e-5)
    stats = learner.train_epoch(0, iteration=1)
    assert stats["loss"] == pytest.approx(LOG2, abs=1e-5)
    assert stats["reward_margin"] == pytest.approx(0.0, abs=1e-5)

    # one step of descent on the DPO loss widened the margin h_w - h_l
    h = (learner.logprobs(batch) - initial).view(4, 2)
    assert (h[:, 0] - h[:, 1]).mean() > 0
    current = learner.logprobs(batch)
    assert not torch.allclose(current, initial, atol=1e-4)

    # reference "previous": the current (trained) weights
    prev = pair_batch("previous")
    learner.begin_iteration(prev)
    torch.testing.assert_close(prev.ref_logps, current)
    # reference "initial" after training: still the frozen pi_0, not the current weights
    again = pair_batch("initial")
    learner.begin_iteration(again)
    torch.testing.assert_close(again.ref_logps, initial, rtol=1e-5, atol=1e-5)
    # ... and the DPO loss now sees the learned margin: below log 2
    assert learner.train_epoch(0, iteration=2)["loss"] < LOG2


def test_learner_simpo_has_no_reference(tiny_policy):
    """SimPO: ref_logps stays None; the first step's loss is SimPO's on the untrained log-probs:
    mean over pairs of -log sigma(beta logp_w/|y_w| - beta logp_l/|y_l| - gamma), beta = 2, gamma = 1."""
    learner = make_pair_learner(tiny_policy, "simpo")
    batch = pair_batch(None)
    logps = independent_logprobs(tiny_policy, batch).view(4, 2)
    lengths = batch.lengths().view(4, 2)
    learner.begin_iteration(batch)
    assert batch.ref_logps is None and learner.reference_model is None
    z = 2.0 * logps[:, 0] / lengths[:, 0] - 2.0 * logps[:, 1] / lengths[:, 1] - 1.0
    stats = learner.train_epoch(0, iteration=1)
    assert stats["loss"] == pytest.approx(-F.logsigmoid(z).mean().item(), rel=1e-4)


def test_learner_lr_follows_warmup_and_linear_decay(tiny_policy):
    """4 pairs, batch_size 4, 4 epochs: 4 optimizer steps, warm-up ceil(0.5 * 4) = 2 steps, then linear:
    factors 1/2, 2/2, 1 - 0/2 = 1, 1 - 1/2 = 1/2, one step per epoch, so stats["lr"] = lr * factor.
    A new iteration restarts the schedule at 1/2."""
    lr = 1e-3
    learner = make_pair_learner(tiny_policy, "dpo", lr=lr, epochs=4, warmup_ratio=0.5, lr_schedule="linear")
    assert learner.begin_iteration(pair_batch("initial"))["optimizer_steps"] == 4.0
    lrs = [learner.train_epoch(e, iteration=1)["lr"] for e in range(4)]
    assert lrs == pytest.approx([lr * f for f in (0.5, 1.0, 1.0, 0.5)])
    factor = lr_multiplier(4, 2, "linear")
    assert lrs == pytest.approx([lr * factor(s) for s in range(4)])
    learner.begin_iteration(pair_batch("initial"))
    assert learner.train_epoch(0, iteration=2)["lr"] == pytest.approx(lr * 0.5)
