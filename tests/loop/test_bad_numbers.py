"""Bad numbers (issue 17): all-empty responses, non-finite scores and log-probs stop the run naming the
iteration and the stage; every response of every prompt tied is a recorded skip."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from selfplay.config.loading import load_config
from selfplay.core.batch import Batch
from selfplay.core.checkpoint import read_metrics
from selfplay.loop.driver import stage
from selfplay.loop.stages import BadNumbers, generate, score, train
from selfplay.loop.workers import Workers
from selfplay.run import main
from tests.loop.test_e2e import FAST
from tests.loop.test_resume import after_iteration_1, assert_same_weights
from tests.policy.test_trainer import batch_of, make_learner

CFG = load_config(["smoke", "run.progress=false"])


@pytest.fixture(scope="module")
def stand_ins(ray_cluster):
    """A generator whose responses are all empty and a scorer whose scores are NaN for the second prompt."""
    import ray

    @ray.remote(num_cpus=0)
    class Silent:
        def generate(self, prompt_ids, n, *args):
            return [[SimpleNamespace(text="", response_ids=[2]) for _ in range(n)] for _ in prompt_ids]

    @ray.remote(num_cpus=0)
    class Broken:
        def score(self, prompts, responses):
            return [torch.full((len(r), len(r)), math.nan if p[-1]["content"] == "b" else 0.0)
                    for p, r in zip(prompts, responses)]

    actors = Silent.remote(), Broken.remote()
    yield actors
    for a in actors:
        ray.kill(a)


def test_a_generator_of_only_empty_responses_stops_the_stage_naming_the_iteration(stand_ins):
    workers = Workers([stand_ins[0]], None, None)
    with pytest.raises(BadNumbers, match=r"^iteration 2, generate: every one of the 6 responses is empty"):
        with stage("generate", 2, {}):
            generate(workers, [[5, 6], [7], [8]], 2, 1.0, CFG, seed=0, desc="generate")


def test_non_finite_scores_stop_the_stage_naming_the_prompt(stand_ins):
    workers = Workers([], stand_ins[1], None)
    with pytest.raises(BadNumbers, match=r"^iteration 3, score: the scorer returned non-finite score for prompt 1: 'b'$"):
        with stage("score", 3, {}):
            score(workers, "score", [user("a"), user("b")], [["x", "y"], ["x", "y"]], CFG)


def test_an_actors_floating_point_error_becomes_one_line_naming_iteration_and_stage():
    with pytest.raises(BadNumbers, match=r"^iteration 1, train: non-finite training loss in epoch 0: \[nan\]$"):
        with stage("train", 1, {}):
            raise FloatingPointError("non-finite training loss in epoch 0: [nan]")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def rollout(scores: list[torch.Tensor]) -> Batch:
    k = scores[0].shape[0]
    return Batch([f"2/{i}" for i in range(len(scores))], [[5, 6]] * len(scores), [user("a")] * len(scores),
                 None, scores, [], [], k, [[7, 2], [8, 2]] * len(scores), ["x", "y"] * len(scores))


def test_every_response_of_every_prompt_tied_is_a_recorded_skip():
    tied = rollout([torch.zeros(2, 2), torch.full((2, 2), 1e-8)])
    stats = train(Workers([], None, None), tied, CFG, 2)  # no learner call is made
    assert stats["loss"] is None and stats["skipped"].startswith("every response of every prompt tied")
    one_preference = rollout([torch.zeros(2, 2), torch.tensor([[0.0, 0.5], [-0.5, 0.0]])])
    with pytest.raises(AttributeError):  # not skipped: it goes on to the learner (None here)
        train(Workers([], None, None), one_preference, CFG, 2)


def test_non_finite_reference_log_probs_are_refused_before_training(tiny_policy, monkeypatch):
    learner = make_learner(tiny_policy, batch_size=4, micro_batch_size=4)
    batch = batch_of(4)
    monkeypatch.setattr(learner, "_reference_logprobs", lambda b: torch.tensor([0.0, math.nan, -1.0, math.inf]))
    with pytest.raises(FloatingPointError, match="^non-finite reference log-probs for 2 of 4 sequences$"):
        learner.begin_iteration(batch)


def test_non_finite_policy_log_probs_stop_training_before_any_update(tiny_policy):
    learner = make_learner(tiny_policy, batch_size=4, micro_batch_size=4)
    learner.begin_iteration(batch_of(4))
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    with torch.no_grad():
        learner.model.lm_head.weight[:, 0] = math.nan  # every logit of every position
    with pytest.raises(FloatingPointError, match="^non-finite policy log-probs in epoch 0, optimizer step 1$"):
        learner.train_epoch(0, iteration=1)
    for name, p in learner.model.named_parameters():
        if name != "lm_head.weight":
            assert torch.equal(p, before[name]), name


def test_a_run_with_every_pair_tied_skips_training_and_keeps_the_policy(hf_run, tmp_path, monkeypatch):
    """Through the loop: with every score counted as a tie, iteration 2 records the skip and pi_2 = pi_1."""
    import selfplay.loop.stages as stages

    run_dir = after_iteration_1(hf_run, tmp_path)
    monkeypatch.setattr(stages, "TIED", math.inf)
    assert main([*FAST, "iter=2", f"run.dir={run_dir}", "generator.backend=hf", "run.resume=true"]) == 0
    record = read_metrics(run_dir)[1]
    assert record["train_loss"] is None and record["train"]["skipped"].startswith("every response of every prompt")
    assert_same_weights(run_dir / "iter_2", run_dir / "iter_1")


def test_bad_numbers_in_a_run_stop_it_in_one_line(hf_run, tmp_path, monkeypatch, capsys):
    import selfplay.loop.driver as driver

    def poisoned(*args, **kwargs):
        raise FloatingPointError("non-finite training loss in epoch 0: [nan]")

    run_dir = after_iteration_1(hf_run, tmp_path)
    monkeypatch.setattr(driver, "train", poisoned)
    assert main([*FAST, "iter=2", f"run.dir={run_dir}", "generator.backend=hf", "run.resume=true"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: iteration 2, train: non-finite training loss in epoch 0: [nan]; the run is intact up "
                       "to iteration 1 (run.resume=true continues it)")
    assert [r["iteration"] for r in read_metrics(run_dir)] == [1] and not (run_dir / "iter_2").exists()
