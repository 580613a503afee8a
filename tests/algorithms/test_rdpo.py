"""Robust DPO (docs/methods.md §6.2): hand-computed values and signs, unbiasedness under label flips, TRL's form
re-derived, the unit in the registry and the config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from selfplay.algorithms.dpo import dpo_loss
from selfplay.algorithms.rdpo import rdpo_loss, rdpo_objective
from selfplay.algorithms.registry import ALGORITHMS, check_algo
from selfplay.algorithms.unit import LossInputs
from selfplay.config.loading import load_config
from selfplay.config.schema import AlgoConfig, ConfigError


def softplus(z: float) -> float:  # l(-z) = -log sigma(-z) = log(1 + e^z)
    return math.log1p(math.exp(z))


def test_rdpo_loss_by_hand():
    """beta = 1, eps = 0.2, d = h_w - h_l = 1:
    l(1) = log(1 + e^-1) = 0.313261687, l(-1) = log(1 + e) = 1.313261687
    L = (0.8 * 0.313261687 - 0.2 * 1.313261687) / 0.6 = -0.020071646: below zero, the flip correction.
    d = -1: (0.8 * 1.313261687 - 0.2 * 0.313261687) / 0.6 = 1.646595020.
    d = 0: (0.6 log 2) / 0.6 = log 2, whatever eps.
    """
    h_w, h_l = torch.tensor([1.0, 0.0, 0.4], requires_grad=True), torch.tensor([0.0, 1.0, 0.4])
    loss = rdpo_loss(h_w, h_l, 1.0, 0.2)
    a, b = softplus(-1.0), softplus(1.0)
    torch.testing.assert_close(loss.detach(), torch.tensor([(0.8 * a - 0.2 * b) / 0.6, (0.8 * b - 0.2 * a) / 0.6,
                                                            math.log(2.0)]))
    assert loss[0].item() == pytest.approx(-0.020071646, abs=1e-7) and loss[1].item() == pytest.approx(1.646595020)
    # the gradient still raises the chosen: dL/dh_w = -beta [(1 - eps) sigma(-d) + eps sigma(d)] / (1 - 2 eps) < 0
    loss.sum().backward()
    s = 1 / (1 + math.exp(1.0))  # sigma(-1)
    assert h_w.grad[0].item() == pytest.approx(-(0.8 * s + 0.2 * (1 - s)) / 0.6, abs=1e-6)
    assert (h_w.grad < 0).all()


def test_rdpo_is_unbiased_under_label_flips_and_is_dpo_at_eps_zero():
    """The paper's point: with the label flipped at rate eps, the expected rDPO loss is DPO's on the true label,
    (1 - eps) L(w, l) + eps L(l, w) = l(beta (h_w - h_l))."""
    h_w, h_l = torch.tensor([0.7, -1.3, 2.0]), torch.tensor([0.1, 0.4, -0.5])
    for eps in (0.0, 0.1, 0.3, 0.45):
        expected = (1 - eps) * rdpo_loss(h_w, h_l, 0.5, eps) + eps * rdpo_loss(h_l, h_w, 0.5, eps)
        torch.testing.assert_close(expected, dpo_loss(h_w, h_l, 0.5))
    torch.testing.assert_close(rdpo_loss(h_w, h_l, 0.5, 0.0), dpo_loss(h_w, h_l, 0.5))


def test_rdpo_objective_is_trls_robust_loss():
    """TRL's robust loss, re-derived from its code: logits = beta ((pi_w - ref_w) - (pi_l - ref_l)),
    (-(1 - ls) logsigmoid(logits) + ls logsigmoid(-logits)) / (1 - 2 ls), ls = label_smoothing = eps."""
    logps = torch.tensor([[-1.0, -3.0], [-4.0, -1.5]])
    ref = torch.tensor([[-2.0, -2.0], [-3.5, -2.0]])
    cfg = OmegaConf.structured(AlgoConfig(name="rdpo", eps=0.25))
    check_algo(cfg)
    assert cfg.beta == 0.1 and cfg.reference == "initial"
    loss, m = rdpo_objective(LossInputs(logps, ref, torch.zeros(2, 2), torch.ones(2, 2)), cfg)
    logits = 0.1 * ((logps[:, 0] - ref[:, 0]) - (logps[:, 1] - ref[:, 1]))
    trl = (-(1 - 0.25) * F.logsigmoid(logits) + 0.25 * F.logsigmoid(-logits)) / (1 - 2 * 0.25)
    torch.testing.assert_close(loss, trl)
    assert m["reward_accuracy"] == pytest.approx(0.5) and m["chosen_reward"] == pytest.approx(0.025, abs=1e-6)


def test_rdpo_is_a_unit_with_a_reference():
    unit = ALGORITHMS["rdpo"]
    assert unit.params == ("beta", "eps") and unit.references == ("initial", "previous")
    assert not (unit.reference_free or unit.on_policy or unit.needs_directions or unit.codable)
    cfg = load_config(["rdpo", "algo.eps=0.3", "algo.beta=0.2"])
    assert (cfg.algo.name, cfg.algo.eps, cfg.algo.beta, cfg.algo.reference) == ("rdpo", 0.3, 0.2, "initial")
    assert load_config(["algo=rdpo"]).algo.eps == 0.1
    assert load_config(["algo=dpo"]).algo.eps is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["rdpo", "algo.eps=0.5"], r"algo.eps is the label-flip rate, in \[0, 0.5\)"),
    (["rdpo", "algo.eps=-0.1"], r"algo.eps is the label-flip rate"),
    (["rdpo", "algo.beta=0"], "algo.beta must be > 0, got 0.0"),
    (["dpo", "algo.eps=0.1"], "algo.eps applies to rdpo, not to algo.name=dpo"),
    (["rdpo", "algo.gamma=1"], "algo.gamma applies to simpo, not to algo.name=rdpo"),
    (["rdpo", "algo.lpc.codes=8"], "algo.lpc applies to the pair losses dpo/ipo/simpo, not to rdpo"),
])
def test_rdpo_refusals_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)
