"""The learning-rate factor shared by the learner, the SFT warm starts and preference-model training."""

from __future__ import annotations

import pytest

from selfplay.core.optim import lr_multiplier


def test_lr_multiplier_warmup_then_decay():
    """total 10, warm-up 4: steps 0..3 -> 1/4, 2/4, 3/4, 4/4; then frac = (step - 4) / 6:
    step 4 (frac 0): 1 for all;  step 6 (frac 1/3): linear 2/3, cosine (1 + cos(pi/3))/2 = 0.75;
    step 7 (frac 1/2): linear 0.5, cosine 0.5;  step 10 (frac 1): linear 0, cosine 0; constant stays 1."""
    for kind in ("constant", "linear", "cosine"):
        f = lr_multiplier(10, 4, kind)
        assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
        assert f(4) == pytest.approx(1.0)
    const, lin, cos = (lr_multiplier(10, 4, k) for k in ("constant", "linear", "cosine"))
    assert [const(s) for s in (6, 7, 9, 10)] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert [lin(s) for s in (6, 7, 9, 10)] == pytest.approx([2 / 3, 0.5, 1 / 6, 0.0])
    assert [cos(s) for s in (6, 7, 10)] == pytest.approx([0.75, 0.5, 0.0], abs=1e-12)
    assert lr_multiplier(5, 0, "linear")(0) == 1.0  # no warm-up: full rate at once
    assert lr_multiplier(5, 0, "linear")(1) == pytest.approx(0.8)


