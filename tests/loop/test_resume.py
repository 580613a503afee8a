"""A driver killed or stopped inside an iteration resumes to the uninterrupted run's metrics (issue 17)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfplay.core.checkpoint import read_metrics
from selfplay.loop.faults import STAGES
from selfplay.run import main
from tests.loop.run_state import iteration_state
from tests.loop.test_e2e import FAST, without_timings


def same(record: dict) -> dict:
    """What a resumed iteration must reproduce: the record but its timings and whether its rollout was reused."""
    return {k: v for k, v in without_timings(record).items() if k != "rollout_reused"}


def after_iteration_1(hf_run, tmp_path):
    """A copy of the uninterrupted two-iteration run as it stood after iteration 1 (its metrics line 2 dropped;
    the resume removes iteration 2's files): the tests stop iteration 2 without paying for iteration 1."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(hf_run, run_dir)
    (run_dir / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    return run_dir


REPO = Path(__file__).resolve().parents[2]
# What a kill leaves on disk for iteration 2, by the stage it hits: nothing (generate, score: before the scored
# rollout is saved), the scored rollout (train, sync, eval, checkpoint), the rollout and the checkpoint but no
# metrics line (metrics: the commit point; a full disk while checkpointing leaves the same, the test below).
REUSED = ("train", "sync", "eval", "checkpoint", "metrics")


def test_a_driver_killed_in_any_stage_resumes_to_the_uninterrupted_run(hf_run, ray_cluster, tmp_path):
    """Driver processes SIGKILLed as they enter a stage of iteration 2 (``SELFPLAY_FAULT=<stage>:2``: none of
    their own clean-up runs, as when a machine is preempted), each resuming what the one before left: iteration 1
    stays intact, metrics lines whole, no actors left behind; the scored rollout is saved once and reused by every
    later resume (no generation or scoring again); the last resume ends with the uninterrupted run's metrics and
    weights.

    A kill leaves only what the run directory holds as the stage begins (writes are atomic; the actors die with
    the driver's job, asserted below), and the uninterrupted run recorded that at every stage's entry (``hf_run``'s
    ``stage_entries.json``).  Consecutive stages that leave the same are one case, killed once, in its last stage:
    today score (nothing saved), checkpoint (the rollout) and metrics (the rollout and the checkpoint), so every
    stage's leftovers are resumed from.  A new stage in ``STAGES`` that leaves something new is a new case by
    itself.  Each driver start costs ~13 s on 2 cores: three kills rather than one per stage."""
    from selfplay.core.rollout_store import rollout_path

    entries = json.loads((hf_run.parent / "stage_entries.json").read_text())
    assert list(entries) == list(STAGES)  # every stage entered, in order
    rollout = str((rollout_path(hf_run, 2) / "scores.safetensors").relative_to(hf_run))
    for stage, left in entries.items():
        assert left["metrics"] == [1], stage  # nothing half-written
        assert (rollout in left["files"]) == (stage in REUSED), stage
        assert ("iter_2/model.safetensors" in left["files"]) == (stage == "metrics"), stage
    cases = [s for s, after in zip(STAGES, (*STAGES[1:], None)) if after is None or entries[after] != entries[s]]
    run_dir = after_iteration_1(hf_run, tmp_path)
    args = [*FAST, "iter=2", f"run.dir={run_dir}", "generator.backend=hf", "run.resume=true"]
    for stage in cases:
        kill_driver(ray_cluster, args, stage)
        assert iteration_state(run_dir, 2) == entries[stage], stage
    assert main(args) == 0
    resumed, uninterrupted = read_metrics(run_dir), read_metrics(hf_run)
    assert resumed[1]["rollout_reused"] and not uninterrupted[1]["rollout_reused"]
    assert resumed[1]["generate_s"] == 0.0 and resumed[1]["score_s"] == 0.0  # nothing generated or scored again
    assert resumed[1]["actor_failures"] == []
    assert same(resumed[1]) == same(uninterrupted[1])
    assert not (run_dir / "rollouts").exists() or not any((run_dir / "rollouts").iterdir())  # dropped at commit
    assert_same_weights(run_dir / "iter_2", hf_run / "iter_2")


def kill_driver(ray, args: list[str], stage: str) -> None:
    """``python -m selfplay.run *args`` as its own process, killed by ``SELFPLAY_FAULT=<stage>:2``; returns once
    Ray has ended the dead driver's job and its actors.  The driver joins the session's cluster (``ray_cluster``):
    a cluster of its own would cost ~7 s more on 2 cores.  It needs the cluster's token authentication: the session's
    ``ray.init`` put ``RAY_AUTH_MODE=token`` in ``os.environ`` (without it in the child's environment the
    connection is refused) and the token is read from ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN``)."""
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "selfplay.run", *args, f"run.ray_address={address}"], cwd=REPO,
                            env={**os.environ, "SELFPLAY_FAULT": f"{stage}:2"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()  # a no-op unless the fault did not stop it
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}:\n{out[-4000:]}"
    assert_actors_ended(proc.pid)


def assert_actors_ended(driver_pid: int, within_s: float = 60.0) -> None:
    """The dead driver's job is over, its actors are dead and their processes gone (Ray's own clean-up: the test
    never runs ``ray stop``, which would end the session's cluster).  Their processes outlive the DEAD state by
    ~0.2 s."""
    import psutil
    from ray._private import state

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + within_s
    while True:
        job = max((j for j in state.jobs() if j["DriverPid"] == driver_pid), key=lambda j: j["StartTime"])
        actors = [a for a in state.actors().values() if a["JobID"] == job["JobID"]]
        left = [(a["ActorClassName"], a["State"], a["Pid"]) for a in actors
                if a["State"] != "DEAD" or (a["Pid"] and running(a["Pid"]))]
        if job["IsDead"] and actors and not left:  # actors: the driver had started its generator, scorer, learner
            return
        assert time.monotonic() < deadline, f"{within_s} s after the kill: job over {job['IsDead']}, left {left}"
        time.sleep(0.1)


def assert_same_weights(a, b) -> None:
    """The two checkpoints' tensors agree to 1e-6 relative (the issue's bar on CPU)."""
    from safetensors.torch import load_file

    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for name, x in ta.items():
        assert (x - tb[name]).norm() <= 1e-6 * tb[name].norm() + 1e-12, name


def test_a_full_disk_while_checkpointing_leaves_the_run_resumable(hf_run, tmp_path, monkeypatch, capsys):
    """ENOSPC on iteration 2's evaluation file (the checkpoint stage, after the learner wrote iter_2/): one line,
    exit 1, iteration 1 intact; the resumed run reuses the rollout and equals the uninterrupted one."""
    import errno

    import selfplay.loop.driver as driver

    real = driver.atomic_write_json

    def full_at_iteration_2(path, obj):
        if str(path).endswith("iter_2.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

    run_dir = after_iteration_1(hf_run, tmp_path)
    args = [*FAST, "iter=2", f"run.dir={run_dir}", "generator.backend=hf", "run.resume=true"]
    monkeypatch.setattr(driver, "atomic_write_json", full_at_iteration_2)
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: disk full writing" in err and "intact up to iteration 1" in err and "run.resume=true" in err
    assert [r["iteration"] for r in read_metrics(run_dir)] == [1] and (run_dir / "iter_1" / "config.json").exists()
    assert (run_dir / "iter_2" / "model.safetensors").exists()  # the learner's checkpoint, not yet committed
    monkeypatch.setattr(driver, "atomic_write_json", real)
    assert main(args) == 0
    assert read_metrics(run_dir)[1]["rollout_reused"]
    assert same(read_metrics(run_dir)[1]) == same(read_metrics(hf_run)[1])
    assert_same_weights(run_dir / "iter_2", hf_run / "iter_2")


def test_a_saved_rollout_round_trips_exactly(tmp_path):
    from selfplay.core.batch import Batch
    from selfplay.core.rollout_store import drop_rollouts, load_rollout, save_rollout

    g = torch.Generator().manual_seed(0)
    batch = Batch(["2/0", "2/1"], [[1, 2], [3]], [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
                  [(0.6, 0.8), (1.0, 0.0)], [torch.randn(2, 2, generator=g, dtype=torch.float64) for _ in range(2)],
                  [torch.rand(2, 2, generator=g) * 100 for _ in range(2)], [([5], [6, 2])], 2,
                  [[7, 2], [8], [9, 9, 2], [2]], ["x", "y", "z", ""], reference="initial")
    save_rollout(tmp_path, 2, batch)
    back = load_rollout(tmp_path, 2, ["2/0", "2/1"])
    for field in ("uids", "prompt_ids", "prompts", "directions", "replay", "group", "response_ids", "texts", "reference"):
        assert getattr(back, field) == getattr(batch, field), field
    for a, b in zip(back.scores + back.rewards, batch.scores + batch.rewards):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert load_rollout(tmp_path, 3, ["3/0"]) is None
    with pytest.raises(ValueError, match="of other prompts than iteration 2's"):
        load_rollout(tmp_path, 2, ["2/0"])
    drop_rollouts(tmp_path, keep=2)
    assert load_rollout(tmp_path, 2, ["2/0", "2/1"]) is not None
    drop_rollouts(tmp_path)
    assert load_rollout(tmp_path, 2, ["2/0", "2/1"]) is None


@pytest.mark.parametrize("spec", ["train", "train:x", "nowhere:2", "train:2:explode"])
def test_a_bad_fault_spec_is_named(spec):
    from selfplay.loop.faults import parse

    with pytest.raises(ValueError, match="SELFPLAY_FAULT="):
        parse(spec)


def test_a_raising_fault_stops_only_its_stage_and_iteration(monkeypatch):
    """``:raise`` (in-process tests, whose cluster must survive) raises where the kill would come, nowhere else."""
    from selfplay.loop.faults import InjectedFault, fault_point

    monkeypatch.setenv("SELFPLAY_FAULT", "train:2:raise")
    fault_point("train", 1)
    fault_point("score", 2)
    with pytest.raises(InjectedFault, match="train of iteration 2"):
        fault_point("train", 2)
    monkeypatch.delenv("SELFPLAY_FAULT")
    fault_point("train", 2)
