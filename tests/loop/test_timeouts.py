"""No silent hang (issue 17): every stage's wait on the actors is bounded, and its error names the stage and the
actor."""

from __future__ import annotations

import time

import pytest

from tests.loop.test_e2e import FAST


def test_a_hung_call_becomes_a_timeout_naming_the_stage_and_the_actor(ray_cluster):
    import ray

    from actors.group import StageTimeout, gather

    @ray.remote(num_cpus=0)
    class Sleeper:
        def nap(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

    quick, hung = Sleeper.remote(), Sleeper.remote()
    start = time.monotonic()
    with pytest.raises(StageTimeout, match=r"^score: scorer 1 did not answer within 2 s$"):
        gather([quick.nap.remote(0.1), hung.nap.remote(600)], "score", False, 2.0, ["scorer 0", "scorer 1"])
    assert time.monotonic() - start < 60  # bounded: the hung call would take 600 s
    assert gather([quick.nap.remote(0.1)], "score", False, 30.0, ["scorer 0"]) == [0.1]
    for actor in (quick, hung):
        ray.kill(actor)


def test_a_stage_that_outlives_its_bound_is_retried_then_stops_the_run_in_one_line(world, ray_cluster, tmp_path,
                                                                                   capsys):
    """The hung learner is killed and started again (failure 1, within run.max_failures=1); when training times
    out again, the run stops naming the stage, the activity and the actor."""
    from selfplay.core.checkpoint import read_metrics
    from selfplay.run import main

    run_dir = tmp_path / "run"
    assert main([*FAST, "iter=1", f"run.dir={run_dir}", "generator.backend=hf", "run.stage_timeouts.train=0.001",
                 "run.max_failures=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: iteration 1, train: learner rank 0 failed (StageTimeout: train: reference "
                          "log-probs: learner rank 0 did not answer within 0.001 s)")
    assert "2 failures, more than run.max_failures=1" in err
    assert "intact up to iteration 0" in err and read_metrics(run_dir) == []


@pytest.mark.parametrize(("arg", "message"), [
    ("run.stage_timeout_s=0", "run.stage_timeout_s must be > 0"),
    ("run.stage_timeouts.sync=5", "run.stage_timeouts.sync: not a stage"),
    ("run.stage_timeouts.train=-1", "run.stage_timeouts.train must be > 0"),
])
def test_bad_timeouts_are_refused(arg, message):
    from selfplay.config.loading import load_config
    from selfplay.config.schema import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config([arg])
