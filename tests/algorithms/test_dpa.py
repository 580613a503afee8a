"""DPA (docs/methods.md §3): rejection sampling by v^T r, replay share, the SFT objective, directional scores and fronts."""

import random

import pytest
import torch
from omegaconf import OmegaConf

from selfplay.algorithms.dpa import build_dpa
from selfplay.algorithms.examples import draw_replay, rejection_sample, replay_count
from selfplay.algorithms.registry import check_algo, get_algorithm
from selfplay.algorithms.unit import LossInputs
from selfplay.config.schema import AlgoConfig, Config
from selfplay.core.batch import Batch, Sample
from selfplay.steering.directional import Steering, directional_scores, front_metrics

NAMES = ["helpfulness", "verbosity"]


def sample(i: int) -> Sample:
    return Sample([100 + i, 2], f"r{i}", True)


def test_rejection_sampling_picks_the_argmax_of_v_dot_r():
    rewards = torch.tensor([[90.0, 90.0], [80.0, 10.0], [40.0, 0.0]])
    assert rejection_sample(rewards, (1.0, 0.0)) == 0  # helpfulness only
    assert rejection_sample(rewards, (0.8, -0.6)) == 1  # 72 - 6 = 66 beats 72 - 54 = 18 and 32
    assert rejection_sample(rewards, (0.0, -1.0)) == 2  # brevity only
    # the argmax of v^T r is the argmax of the row means of S = v^T (r_i - r_j) / tau
    s = directional_scores(rewards, (0.8, -0.6), tau=10.0)
    assert int(s.mean(dim=1).argmax()) == 1


def test_directional_scores_are_skew_symmetric_log_odds():
    r = torch.tensor([[50.0, 20.0], [70.0, 40.0], [30.0, 90.0]])
    s = directional_scores(r, (0.6, 0.8), tau=10.0)
    assert torch.allclose(s, -s.T) and torch.all(s.diagonal() == 0)
    assert s[1, 0].item() == pytest.approx((0.6 * 20 + 0.8 * 20) / 10)


@pytest.mark.parametrize("n,share,expected", [(256, 0.15, 45), (100, 0.0, 0), (60, 0.5, 60), (10, 0.15, 2)])
def test_replay_count_gives_the_configured_share(n, share, expected):
    r = replay_count(n, share)
    assert r == expected
    assert abs(r / (n + r) - share) <= 0.5 / (n + r) + 1e-9


def test_build_dpa_keeps_the_best_per_direction_and_appends_replay():
    rewards = torch.tensor([[90.0, 90.0], [80.0, 10.0], [40.0, 0.0]])
    pool = [([9, i], [50 + i, 2]) for i in range(20)]
    rollout = Batch(["1/0", "1/1"], [[1, 1], [2, 2]], [[{"role": "user", "content": "a"}]] * 2,
                    directions=[(1.0, 0.0), (0.0, -1.0)], rewards=[rewards, rewards],
                    replay=draw_replay(pool, n=2, share=0.5, rng=random.Random(0)))
    rollout = rollout.with_samples([[sample(i) for i in range(3)], [sample(i) for i in range(3)]])
    batch = build_dpa(rollout, OmegaConf.create({}))
    assert len(batch) == 4 and batch.group == 1 and batch.reference is None
    assert batch.prompt_ids[:2] == [[1, 1], [2, 2]] and batch.uids == ["1/0", "1/1", "replay/0", "replay/1"]
    assert batch.response_ids[:2] == [[100, 2], [102, 2]]
    assert batch.response_ids[2:] == [r for _, r in rollout.replay] and len(rollout.replay) == 2
    assert draw_replay(pool, 2, 0.5, random.Random(0)) == rollout.replay  # seeded
    assert len(draw_replay(pool[:3], 100, 0.5, random.Random(0))) == 3  # a small pool is used whole


def test_sft_objective_is_the_per_token_nll():
    x = LossInputs(torch.tensor([[-6.0], [-2.0]]), None, torch.zeros(2, 1), torch.tensor([[3.0], [4.0]]))
    loss, metrics = get_algorithm("dpa").objective(x, OmegaConf.create({}))
    assert loss.tolist() == pytest.approx([2.0, 0.5])
    assert metrics["nll_per_token"] == pytest.approx(1.25)


def test_dpa_defaults_and_errors():
    cfg = OmegaConf.structured(AlgoConfig(name="dpa"))
    check_algo(cfg)
    assert cfg.replay == 0.15 and cfg.init == "sft" and cfg.pairs == "best_of_n" and cfg.reference is None
    for bad, match in [({"replay": 1.0}, "algo.replay"), ({"init": "latest"}, "algo.init"),
                       ({"beta": 0.1}, "algo.beta applies to")]:
        with pytest.raises(ValueError, match=match):
            check_algo(OmegaConf.structured(AlgoConfig(name="dpa", **bad)))
    with pytest.raises(ValueError, match="algo.replay applies to dpa"):
        check_algo(OmegaConf.structured(AlgoConfig(name="dpo", replay=0.1)))


def test_front_metrics_by_hand():
    grid = [(1.0, 0.0), (0.6, 0.8)]
    directions = [grid[0], grid[1], grid[0], grid[1]]  # two prompts x the grid
    rewards = [torch.tensor([[60.0, 10.0], [80.0, 30.0]]), torch.tensor([[50.0, 60.0], [50.0, 80.0]]),
               torch.tensor([[40.0, 30.0], [60.0, 10.0]]), torch.tensor([[70.0, 40.0], [70.0, 60.0]])]
    lengths = [[3, 5], [9, 11], [5, 3], [7, 13]]
    out = front_metrics(rewards, directions, grid, NAMES, [0.0, 0.0], lengths)
    assert out["front"] == [[60.0, 20.0], [60.0, 60.0]]
    assert out["hypervolume"] == pytest.approx(60 * 60)  # (60, 60) dominates (60, 20)
    assert out["steerability"] == {"helpfulness": 0.0, "verbosity": 1.0}  # equal helpfulness means: no ranking
    assert out["length_steerability"]["verbosity"] == 1.0 and out["front_mean_length"] == [4.0, 10.0]


def test_steering_units_and_errors():
    cfg = OmegaConf.structured(Config)
    cfg.scorer.tau = 10.0
    cfg.directions.per_prompt = 3
    steering = Steering.from_config(cfg, NAMES)
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    units, vs = steering.training_units(prompts, random.Random(0))
    assert len(units) == 6 and len(set(vs)) == 6
    assert all(u[0]["role"] == "system" and u[1:] == p for u, p in zip(units, [prompts[0]] * 3 + [prompts[1]] * 3))
    units, vs = steering.evaluation_units(prompts)
    assert len(units) == 20 and vs[:10] == steering.grid
    cfg.directions.hv_reference = [0.0]
    with pytest.raises(ValueError, match="hv_reference needs one value per attribute"):
        Steering.from_config(cfg, NAMES)
    cfg.directions.hv_reference = None
    cfg.directions.fixed = [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"2 components \(helpfulness, verbosity\), got 3"):
        Steering.from_config(cfg, NAMES)


@pytest.mark.parametrize("init", ["sft", "previous"])
def test_learner_dpa_starts_each_iteration_from_sft_or_previous(tiny_policy, init):
    """algo.init=sft: every iteration starts again from pi_0 ([DPA]); previous: from the trained weights.
    The first step's loss is the SFT per-token NLL of the starting weights."""
    from selfplay.config.schema import TrainConfig
    from selfplay.policy.specs import LearnerSpec
    from selfplay.policy.trainer import PolicyTrainer

    algo = OmegaConf.structured(AlgoConfig(name="dpa", init=init))
    check_algo(algo)
    train = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"lr": 1e-2, "epochs": 1, "batch_size": 4,
                                                                "micro_batch_size": 4})
    learner = PolicyTrainer(LearnerSpec(tiny_policy, tiny_policy, "float32", train, algo, seed=0))
    batch = lambda: Batch.examples([f"1/{i}" for i in range(4)], [[5, 6, 7]] * 4, [[20 + i, 30, 2] for i in range(4)],  # noqa: E731
                                   torch.zeros(4), 1, None)
    b = batch()
    learner.begin_iteration(b)
    start = learner.logprobs(b)
    first = learner.train_epoch(0, iteration=1)
    assert first["loss"] == pytest.approx((-start / 3).mean().item(), rel=1e-4)
    trained = learner.logprobs(b)
    assert trained.mean() > start.mean()  # one SFT step raised log pi(y*)
    b2 = batch()
    learner.begin_iteration(b2)
    expected = start if init == "sft" else trained
    torch.testing.assert_close(learner.logprobs(b2), expected, rtol=1e-5, atol=1e-5)
