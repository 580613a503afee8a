"""The two judges a run can have: the same methods, preferences or directions behind them."""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from selfplay.config.loading import load_config
from selfplay.loop.judges import DirectionalJudge, Judgement, PreferenceJudge
from selfplay.loop.sources import Oracle
from selfplay.steering.directional import Steering
from selfplay.steering.directions import read

NAMES = ["helpfulness", "verbosity"]
PROMPTS = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]


def directional(**overrides) -> DirectionalJudge:
    args = ["dpa", "directions.grid_size=2", "directions.grid_angles=[0,90]", "directions.per_prompt=2"]
    cfg = load_config(args + [f"{k}={v}" for k, v in overrides.items()])
    return DirectionalJudge(Steering.from_config(cfg, NAMES))


def test_preference_judge_leaves_prompts_as_they_are():
    judge = PreferenceJudge()
    ids = [[1, 2], [3]]
    assert judge.training_prompts(PROMPTS, ids, lambda m: pytest.fail("re-encoded"), random.Random(0)) == (
        PROMPTS, ids, None)
    assert judge.evaluation_prompts(PROMPTS) == (PROMPTS, None)
    assert judge.fronts([], None, 2, None) == {}


def test_preference_judge_takes_the_oracles_probabilities_as_they_are():
    oracle = Oracle(preferences=lambda x, r: [[0.5, 0.8], [0.2, 0.5]])
    probs, labels = PreferenceJudge().oracle(oracle, ["a"], [["y1", "y2"]], None)
    assert labels == [] and torch.equal(probs[0], torch.tensor([[0.5, 0.8], [0.2, 0.5]]))


def test_directional_judge_conditions_every_prompt_on_drawn_directions():
    judge = directional()
    messages, ids, directions = judge.training_prompts(PROMPTS, [[1], [2]], lambda m: [len(m)], random.Random(0))
    assert len(messages) == len(ids) == len(directions) == 4  # per_prompt = 2
    for m, v in zip(messages, directions):
        names, weights = read(m[0]["content"])
        assert names == NAMES and weights == pytest.approx(v, abs=0.01)
    assert ids == [[2]] * 4  # re-encoded with the system prompt
    held_out, grid = judge.evaluation_prompts(PROMPTS)
    assert len(held_out) == 4 and grid == [(1.0, 0.0), pytest.approx((0.0, 1.0), abs=1e-12)] * 2


def test_directional_judge_fronts_by_hand():
    """Grid <1, 0> and <0, 1>, n = 1: the current policy's response is row 0 of each unit, the initial's row 1."""
    judge = directional()
    _, grid = judge.evaluation_prompts(PROMPTS[:1])
    rewards = [torch.tensor([[80.0, 10.0], [50.0, 50.0]]), torch.tensor([[20.0, 90.0], [50.0, 50.0]])]
    out = judge.fronts(rewards, grid, n=1, lengths=[[5], [15]])
    assert out["front"] == [[80.0, 10.0], [20.0, 90.0]] and out["initial_front"] == [[50.0, 50.0]] * 2
    assert out["front_mean_length"] == [5.0, 15.0]
    assert judge.fronts([], grid, 1, None) == {}  # labels over other attributes than the model's: no front


def test_directional_oracle_scalarises_its_labels_and_gives_a_front_only_for_the_same_attributes():
    judge = directional()
    labels = {"y1": (80.0, 0.0), "y2": (60.0, 0.0)}
    same = Oracle(preferences=None, attributes=lambda x, y: labels[y], names=tuple(NAMES))
    probs, truth = judge.oracle(same, ["a"], [["y1", "y2"]], [(1.0, 0.0)])
    # v^T (r_1 - r_2) / tau = 20 / 10 = 2 logits
    torch.testing.assert_close(probs[0][0, 1], torch.sigmoid(torch.tensor(2.0)))
    assert len(truth) == 1
    other = Oracle(preferences=None, attributes=lambda x, y: labels[y], names=("a", "b"))
    assert judge.oracle(other, ["a"], [["y1", "y2"]], [(1.0, 0.0)])[1] == []


def test_judgement_probabilities_are_the_sigmoid_of_the_scores():
    s = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    torch.testing.assert_close(Judgement([s]).probabilities()[0], torch.sigmoid(s))


def test_the_config_is_read_only_once_validated():
    cfg = load_config([])
    with pytest.raises(Exception, match="read-only|ReadonlyConfig"):
        cfg.scorer.model = "x"
    assert OmegaConf.is_readonly(cfg)
