"""SLiC-HF's hinge (docs/methods.md §6.1): hand-computed values and gradient signs, TRL's form re-derived, the unit
in the registry and the config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from selfplay.algorithms.registry import ALGORITHMS, check_algo
from selfplay.algorithms.slic import slic_loss, slic_objective
from selfplay.algorithms.unit import LossInputs
from selfplay.config.loading import load_config
from selfplay.config.schema import AlgoConfig, ConfigError


def test_slic_loss_values_and_gradient_signs():
    """beta = 0.5 (margin delta = 2 on h_w - h_l):
    d = 1:  1 - 0.5 = 0.5, active: d loss / d h_w = -0.5, d loss / d h_l = +0.5
    d = -1: 1 + 0.5 = 1.5, active
    d = 3:  1 - 1.5 < 0 -> 0, the margin is met: no gradient
    d = 2:  exactly the margin -> 0
    """
    h_w = torch.tensor([1.0, 0.2, 3.0, 2.5], requires_grad=True)
    h_l = torch.tensor([0.0, 1.2, 0.0, 0.5], requires_grad=True)
    loss = slic_loss(h_w, h_l, 0.5)
    torch.testing.assert_close(loss.detach(), torch.tensor([0.5, 1.5, 0.0, 0.0]))
    loss.sum().backward()
    torch.testing.assert_close(h_w.grad, torch.tensor([-0.5, -0.5, 0.0, 0.0]))
    torch.testing.assert_close(h_l.grad, torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_slic_objective_is_trls_hinge_on_reference_log_ratios():
    """TRL's hinge, re-derived from its code: logits = (pi_w - pi_l) - (ref_w - ref_l), loss = relu(1 - beta logits),
    rewards beta (pi - ref).  ex 0: logits = (-1 + 3) - (-2 + 2) = 2; ex 1: (-4 + 1.5) - (-3.5 + 2) = -1."""
    logps = torch.tensor([[-1.0, -3.0], [-4.0, -1.5]])
    ref = torch.tensor([[-2.0, -2.0], [-3.5, -2.0]])
    cfg = OmegaConf.structured(AlgoConfig(name="slic"))
    check_algo(cfg)
    assert cfg.beta == 0.1 and cfg.reference == "initial" and cfg.pairs == "best_worst"
    loss, m = slic_objective(LossInputs(logps, ref, torch.zeros(2, 2), torch.ones(2, 2)), cfg)
    logits = (logps[:, 0] - logps[:, 1]) - (ref[:, 0] - ref[:, 1])
    torch.testing.assert_close(loss, F.relu(1 - 0.1 * logits))
    torch.testing.assert_close(loss, torch.tensor([0.8, 1.1]))
    assert m["reward_accuracy"] == pytest.approx(0.5)
    assert m["reward_margin"] == pytest.approx(0.1 * (2 - 1) / 2, abs=1e-6)


def test_slic_is_a_unit_with_a_reference():
    unit = ALGORITHMS["slic"]
    assert unit.params == ("beta",) and unit.references == ("initial", "previous")
    assert not (unit.reference_free or unit.on_policy or unit.needs_directions or unit.codable)
    cfg = load_config(["slic", "algo.beta=0.2", "algo.reference=previous"])
    assert (cfg.algo.name, cfg.algo.beta, cfg.algo.reference, cfg.algo.eta) == ("slic", 0.2, "previous", None)
    assert load_config(["algo=slic"]).algo.beta == 0.1


@pytest.mark.parametrize(("overrides", "message"), [
    (["slic", "algo.beta=0"], "algo.beta must be > 0, got 0.0"),
    (["slic", "algo.tau=0.5"], "algo.tau applies to ipo, not to algo.name=slic"),
    (["slic", "algo.pairs=all"], "algo.pairs='all' is not a pair strategy of slic"),
    (["slic", "algo.lpc.codes=8"], "algo.lpc applies to the pair losses dpo/ipo/simpo, not to slic"),
])
def test_slic_refusals_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)
