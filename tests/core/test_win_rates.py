"""Win-rate intervals (bootstrap over prompts) and the length-controlled win rate, against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from selfplay.core.win_rates import bootstrap_interval, lc_rate, mean_rate, win_rate_report


def per_prompt(rates: list[float]) -> torch.Tensor:
    """One 1 x 1 preference block a prompt."""
    return torch.tensor(rates, dtype=torch.float64).view(-1, 1, 1)


def test_the_interval_on_fixed_data_is_the_hand_computed_one():
    """Prompt win rates [0, 1, 1, 1]: a resample's mean is Binomial(4, 3/4) / 4, with P(0) = 1/256,
    P(1/4) = 12/256, P(1/2) = 54/256, P(3/4) = 108/256, P(1) = 81/256.  The 2.5% quantile falls where the
    cumulative first passes 0.025: at 1/4 (0.004 -> 0.051); the 97.5% quantile at 1 (0.684 -> 1).
    So [0.25, 1.0], from any seed with enough draws, and the same twice from one seed."""
    prefs = per_prompt([0, 1, 1, 1])
    units = torch.arange(4)
    for seed in (0, 1, 2):
        assert bootstrap_interval(lambda w: mean_rate(prefs, w), units, seed, draws=4000) == (0.25, 1.0)
    one = bootstrap_interval(lambda w: mean_rate(prefs, w), units, 7, draws=300)
    assert one == bootstrap_interval(lambda w: mean_rate(prefs, w), units, 7, draws=300)


def test_the_interval_contains_the_estimate_and_narrows_with_more_prompts():
    g = torch.Generator().manual_seed(0)
    widths = []
    for prompts in (16, 64, 256):
        prefs = torch.rand(prompts, 3, 3, generator=g, dtype=torch.float64) ** 0.7
        report = win_rate_report(prefs, None, torch.arange(prompts), 0, "wr")
        lo, hi = report["wr_ci"]
        assert lo < report["wr"] < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.35)  # about 1 / sqrt(prompts)


def test_a_prompts_units_are_resampled_together():
    """Two units a prompt (DPA: its directions), equal within a prompt.  Clustered by prompt, the interval is
    the one of the prompts alone; counted as independent units it would be narrower."""
    prompt_rates = [0.1, 0.9, 0.8, 0.3, 0.6, 0.7, 0.2, 0.95]
    units = per_prompt([r for r in prompt_rates for _ in range(2)])
    clustered = bootstrap_interval(lambda w: mean_rate(units, w), torch.arange(16) // 2, 3)
    alone = bootstrap_interval(lambda w: mean_rate(per_prompt(prompt_rates), w), torch.arange(8), 3)
    assert clustered == pytest.approx(alone, abs=1e-9)
    naive = bootstrap_interval(lambda w: mean_rate(units, w), torch.arange(16), 3)
    assert naive[1] - naive[0] < clustered[1] - clustered[0]


def test_equal_lengths_leave_the_win_rate_as_it_is():
    g = torch.Generator().manual_seed(1)
    prefs = torch.rand(20, 4, 4, generator=g, dtype=torch.float64)
    report = win_rate_report(prefs, torch.zeros(20, 4, 4), torch.arange(20), 0, "wr")
    assert report["lc_wr"] == pytest.approx(report["wr"], abs=1e-9)
    assert report["lc_wr_ci"] == pytest.approx(report["wr_ci"], abs=1e-6)


def test_a_preference_for_length_alone_is_controlled_to_one_half():
    """The preference is a function of the length difference only, and the policy is longer on average: the raw
    win rate is high, the length-controlled one (at equal length) is 1/2."""
    g = torch.Generator().manual_seed(2)
    a = torch.randint(20, 60, (50, 4, 1), generator=g).double()
    b = torch.randint(5, 45, (50, 1, 4), generator=g).double()
    d = a - b
    prefs = torch.sigmoid(1.5 * torch.tanh(d / d.std(unbiased=False)))
    ones = torch.ones(1, 50, dtype=torch.float64)
    assert mean_rate(prefs, ones).item() > 0.62
    assert lc_rate(prefs, d, ones).item() == pytest.approx(0.5, abs=1e-6)


def test_the_length_controlled_rate_keeps_a_real_quality_difference():
    """logit P = 0.8 + 1.5 tanh(d / s): the rate at equal length is sigmoid(0.8), whatever the lengths."""
    g = torch.Generator().manual_seed(3)
    d = (torch.randint(20, 60, (40, 3, 1), generator=g) - torch.randint(5, 45, (40, 1, 3), generator=g)).double()
    prefs = torch.sigmoid(0.8 + 1.5 * torch.tanh(d / d.std(unbiased=False)))
    lc = lc_rate(prefs, d, torch.ones(1, 40, dtype=torch.float64)).item()
    assert lc == pytest.approx(torch.sigmoid(torch.tensor(0.8)).item(), abs=1e-6)
