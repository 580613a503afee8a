"""The learner without Ray: log-prob caching, gradient accumulation, per-iteration optimizer reset."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from selfplay.algorithms.registry import check_algo
from selfplay.config.schema import AlgoConfig, TrainConfig
from selfplay.core.batch import TrainBatch
from selfplay.policy.learner import Learner


def make_learner(path: str, **train) -> Learner:
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"lr": 1e-2, "epochs": 1, **train})
    algo = OmegaConf.structured(AlgoConfig)
    check_algo(algo)
    return Learner(path, path, "float32", cfg, algo, seed=0)


def batch_of(n: int) -> TrainBatch:
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(10, 200, (3 + i % 3,), generator=g).tolist() for i in range(n)]
    responses = [torch.randint(10, 200, (2 + i % 4,), generator=g).tolist() for i in range(n)]
    return TrainBatch(prompts, responses, torch.linspace(-1, 1, n))


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
    assert len(learner.optimizer.optimizer.state) > 0
    learner.begin_iteration(batch_of(8))
    assert len(learner.optimizer.optimizer.state) == 0
