"""Actors that die or hang (issue 17): started again, their unfinished calls made again or the iteration again
from the last checkpoint, and the run ends as an uninterrupted one would."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from selfplay.core.checkpoint import read_metrics
from selfplay.run import main
from tests.loop.test_e2e import FAST
from tests.loop.test_resume import after_iteration_1, assert_same_weights, same


@ray.remote(num_cpus=0)
class Worker:
    """A stand-in actor: ``work(i, seconds)`` sleeps, then returns 10 i."""

    def work(self, i: int, seconds: float) -> int:
        time.sleep(seconds)
        return 10 * i


def pid(actor) -> int:
    """The actor's process (asked while it is idle: an actor answers its calls in order)."""
    return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))


def sigkill(actor) -> None:
    """Kill the (idle) actor's process as the OOM killer would: nothing of Ray's own shutdown runs."""
    os.kill(pid(actor), signal.SIGKILL)


def test_a_call_whose_actor_dies_or_hangs_is_made_again_and_finished_calls_are_kept(ray_cluster):
    from actors.group import StageTimeout, gather

    workers = [Worker.remote() for _ in range(3)]
    redone = []

    def redo_as(values: list[int]):  # call i computes values[i] on workers[values[i]]
        def redo(i: int, error: Exception):
            redone.append((values[i], type(error).__name__))
            workers[values[i]] = Worker.remote()
            return workers[values[i]].work.remote(values[i], 0.0)
        return redo

    busy = pid(workers[1])
    refs = [workers[0].work.remote(0, 0.0), workers[1].work.remote(1, 600), workers[2].work.remote(2, 0.0)]
    ray.get(refs[0])
    os.kill(busy, signal.SIGKILL)  # mid-call
    assert gather(refs, "generate", False, 60.0, ["g0", "g1", "g2"], redo_as([0, 1, 2])) == [0, 10, 20]
    assert redone == [(1, "ActorDiedError")]  # calls 0 and 2 were made once

    start = time.monotonic()
    refs = [workers[0].work.remote(0, 0.0), workers[2].work.remote(2, 600)]
    assert gather(refs, "score", False, 2.0, ["s0", "s2"], redo_as([0, 2])) == [0, 20]
    assert redone[1:] == [(2, "StageTimeout")] and time.monotonic() - start < 60
    with pytest.raises(StageTimeout, match="^score: s1 did not answer within 1 s$"):
        gather([workers[0].work.remote(0, 0.0), workers[1].work.remote(1, 600)], "score", False, 1.0, ["s0", "s1"])
    for w in workers:
        ray.kill(w)


def run_killing(monkeypatch, run_dir, stage: str, role: str, extra: tuple[str, ...] = (), resume: bool = True) -> int:
    """Resume ``run_dir`` (stopped after iteration 1; ``resume=False``: start it) to iteration 2, killing the
    ``role`` actor's process (generator 0, the scorer or learner rank 0) as the driver enters ``stage`` of
    iteration 2."""
    import selfplay.loop.driver as driver
    import selfplay.run as run

    started, real_start = {}, run.start_workers

    def keep(*args, **kwargs):
        started["workers"] = real_start(*args, **kwargs)
        return started["workers"]

    def kill_at(name: str, t: int) -> None:
        if (name, t) == (stage, 2) and "killed" not in started:  # once: not again in the iteration done again
            started["killed"], w = True, started["workers"]
            sigkill({"generator": w.generators[0], "scorer": w.scorer}.get(role) or w.learner.ranks[0])

    monkeypatch.setattr(run, "start_workers", keep)
    monkeypatch.setattr(driver, "fault_point", kill_at)
    return main([*FAST, "iter=2", f"run.dir={run_dir}", "generator.backend=hf", *["run.resume=true"] * resume, *extra])


@pytest.mark.parametrize(("stage", "role", "actor"), [("generate", "generator", "generator 0"),
                                                      ("train", "learner", "learner rank 0")])
def test_an_actor_killed_mid_iteration_is_restarted_and_the_run_ends_as_uninterrupted(
        hf_run, tmp_path, monkeypatch, stage, role, actor):
    """A generator killed in iteration 2's generation: restarted with pi_1's weights, its shard generated again.
    The learner killed as training starts: started again from iter_1/, the iteration again (its scored
    rollout reused).  Either way the same metrics and weights as the uninterrupted run, and the failure
    listed in the metrics line."""
    run_dir = after_iteration_1(hf_run, tmp_path)
    assert run_killing(monkeypatch, run_dir, stage, role) == 0
    resumed, uninterrupted = read_metrics(run_dir)[1], read_metrics(hf_run)[1]
    [failure] = resumed["actor_failures"]
    assert failure["stage"] == stage and failure["actor"] == actor and "ActorDiedError" in failure["cause"]
    assert uninterrupted["actor_failures"] == []
    assert {**same(resumed), "actor_failures": []} == same(uninterrupted)
    assert_same_weights(run_dir / "iter_2", hf_run / "iter_2")


def test_one_failure_more_than_max_failures_stops_the_run_in_one_line(hf_run, tmp_path, monkeypatch, capsys):
    run_dir = after_iteration_1(hf_run, tmp_path)
    assert run_killing(monkeypatch, run_dir, "generate", "generator", ("run.max_failures=0",)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: iteration 2, generate: generator 0 failed (ActorDiedError: ")
    assert "run.max_failures=0: no actor is restarted" in err and "intact up to iteration 1" in err
    assert [r["iteration"] for r in read_metrics(run_dir)] == [1]


def test_workers_that_cannot_restart_stop_at_the_first_failure_naming_it(ray_cluster):
    """Without a Spawn (benches, single-stage tests) a dead generator is one clear error, not a retry loop."""
    import ray

    from selfplay.config.loading import load_config
    from selfplay.loop.stages import generate
    from selfplay.loop.workers import TooManyFailures, Workers

    @ray.remote(num_cpus=0)
    class Doomed:
        def generate(self, *args):
            return []

    doomed = Doomed.remote()
    ray.kill(doomed)
    with pytest.raises(TooManyFailures, match=r"^generate: generator 0 failed \(ActorDiedError: .*no Spawn\)$"):
        generate(Workers([doomed], None, None), [[5, 6]], 2, 1.0, load_config(["smoke"]), seed=0, desc="generate")
