"""Directions: validation, the exact DPA template and its parser, sampling ranges, grids."""

import math
import random

import pytest
import torch
from omegaconf import OmegaConf

from selfplay.config.schema import DirectionsConfig
from selfplay.steering import directions as d

NAMES = ["helpfulness", "verbosity"]
PREFIX = ("You are a helpful, respectful, and honest assistant who always responds to the user in a harmless way. "
          "Your response should maximize weighted rating = ")


def test_template_is_the_released_string_with_a_negative_weight():
    v = d.from_angle(-15)  # cos = 0.9659, sin = -0.2588
    assert d.render(v, NAMES) == PREFIX + "helpfulness*97 + verbosity*-26"
    assert d.render((1.0, 0.0), NAMES) == PREFIX + "helpfulness*100 + verbosity*0"
    assert not d.render(v, NAMES).endswith(".")


@pytest.mark.parametrize("angle", [-45, -30.5, -15, -1, 0, 12.3, 45, 90, 135, -170])
def test_template_round_trips_byte_for_byte(angle):
    text = d.render(d.from_angle(angle), NAMES)
    names, v = d.read(text)
    assert names == NAMES
    assert d.render(v, names) == text
    assert v == tuple(w / 100 for w in d.weights(d.from_angle(angle)))


def test_template_with_three_attributes_round_trips():
    text = d.render((0.6, 0.0, -0.8), ["helpfulness", "complexity", "verbosity"])
    assert text.endswith("helpfulness*60 + complexity*0 + verbosity*-80")
    assert d.read(text) == (["helpfulness", "complexity", "verbosity"], (0.6, 0.0, -0.8))


@pytest.mark.parametrize("text", [
    "You are a helpful assistant.",
    PREFIX + "helpfulness*97 + verbosity*-26.",  # trailing period
    PREFIX + "helpfulness*97 +verbosity*-26",
    PREFIX + "helpfulness*097 + verbosity*-26",  # not canonical
    PREFIX + "helpfulness*0.97 + verbosity*-26",
])
def test_read_refuses_other_text(text):
    with pytest.raises(d.DirectionError):
        d.read(text)


def test_validate_errors_and_normalisation():
    with pytest.raises(d.DirectionError, match=r"2 components \(helpfulness, verbosity\), got 3"):
        d.validate([0.6, 0.8, 0.0], NAMES)
    with pytest.raises(d.DirectionError, match="zero vector"):
        d.validate([0, 0], NAMES)
    with pytest.raises(d.DirectionError, match="finite"):
        d.validate([float("nan"), 1.0], NAMES)
    with pytest.warns(UserWarning, match="normalised"):
        v = d.validate([3, 4], NAMES)
    assert v == pytest.approx((0.6, 0.8))
    assert d.validate([0.8, -0.6], NAMES) == (0.8, -0.6)


def test_parse_says_how_many_components_are_expected():
    assert d.parse("0.8,-0.6", NAMES) == (0.8, -0.6)
    with pytest.raises(d.DirectionError, match=r"2 comma-separated numbers \(helpfulness,verbosity\)"):
        d.parse("0.8,abc", NAMES)
    with pytest.raises(d.DirectionError, match="has 2 components"):
        d.parse("1", NAMES)


def test_condition_replaces_the_system_prompt_and_strip_removes_it():
    msgs = [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]
    out = d.condition(msgs, (0.8, -0.6), NAMES)
    assert out[0] == {"role": "system", "content": PREFIX + "helpfulness*80 + verbosity*-60"}
    assert out[1:] == msgs[1:]
    assert d.strip(out) == [{"role": "user", "content": "hi"}]
    assert d.strip(msgs) == msgs  # a user's own system prompt stays


def test_angle_sampling_stays_in_seed_003_range():
    cfg = OmegaConf.structured(DirectionsConfig)
    draw = d.sampler(cfg, NAMES)
    rng = random.Random(0)
    vs = [draw(rng) for _ in range(2000)]
    for v1, v2 in vs:
        assert math.isclose(v1 * v1 + v2 * v2, 1.0)
        assert math.sqrt(2) / 2 - 1e-9 <= v1 <= 1 and -math.sqrt(2) / 2 - 1e-9 <= v2 <= 0
    angles = [math.degrees(math.atan2(v2, v1)) for v1, v2 in vs]
    assert min(angles) < -44 and max(angles) > -1  # covers the range
    assert abs(sum(angles) / len(angles) + 22.5) < 1.0  # uniform: mean at the middle


@pytest.mark.parametrize("m,max_angle", [(2, 20.0), (3, 30.0), (5, 10.0), (3, 120.0)])
def test_cap_sampling_stays_in_its_cap(m, max_angle):
    center = [1.0] * m
    cfg = OmegaConf.structured(DirectionsConfig(center=center, max_angle=max_angle))
    draw = d.sampler(cfg, [f"a{i}" for i in range(m)])
    rng = random.Random(1)
    c = d.validate(center, [f"a{i}" for i in range(m)])
    angles = []
    for _ in range(500):
        v = draw(rng)
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9)
        angles.append(d.angle_to(v, c))
    assert max(angles) <= max_angle + 1e-6
    assert max(angles) > 0.8 * max_angle


def test_sampling_is_deterministic_with_a_seed_and_fixed_overrides():
    cfg = OmegaConf.structured(DirectionsConfig)
    draw = d.sampler(cfg, NAMES)
    assert [draw(random.Random(3)) for _ in range(3)] == [draw(random.Random(3)) for _ in range(3)]
    fixed = d.sampler(OmegaConf.structured(DirectionsConfig(fixed=[0.8, -0.6])), NAMES)
    assert fixed(random.Random(0)) == (0.8, -0.6)


def test_angles_need_two_attributes():
    with pytest.raises(d.DirectionError, match="directions.center"):
        d.sampler(OmegaConf.structured(DirectionsConfig), ["a", "b", "c"])
    with pytest.raises(d.DirectionError, match="directions.grid"):
        d.evaluation_grid(OmegaConf.structured(DirectionsConfig), ["a", "b", "c"])


def test_evaluation_grid_is_seed_003_fig_4():
    g = d.evaluation_grid(OmegaConf.structured(DirectionsConfig), NAMES)
    assert len(g) == 10
    assert g[0] == pytest.approx((1.0, 0.0)) and g[-1] == pytest.approx((math.sqrt(2) / 2, math.sqrt(2) / 2))
    assert all(a[1] < b[1] for a, b in zip(g, g[1:]))


def test_scalarise():
    r = torch.tensor([[80.0, 20.0], [60.0, 90.0]])
    assert d.scalarise(r, (0.8, -0.6)).tolist() == pytest.approx([52.0, -6.0])
