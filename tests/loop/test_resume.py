"""A driver stopped inside an iteration resumes to the uninterrupted run's metrics (issue 17)."""

from __future__ import annotations

import pytest
import torch

from selfplay.core.checkpoint import read_metrics
from selfplay.run import main
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


# What a stop leaves on disk falls in three classes: nothing of iteration 2 (score: before its rollout is saved),
# its scored rollout (train; sync and eval leave the same), its rollout and checkpoint but no metrics line (a stop
# at the metrics write, or in checkpointing: the full-disk test below).
@pytest.mark.parametrize("stage", ["score", "train"])
def test_a_driver_stopped_inside_an_iteration_resumes_to_the_uninterrupted_run(hf_run, tmp_path, monkeypatch, stage):
    from selfplay.core.rollout_store import rollout_path
    from selfplay.loop.faults import InjectedFault

    run_dir = after_iteration_1(hf_run, tmp_path)
    args = [*FAST, "iter=2", f"run.dir={run_dir}", "generator.backend=hf", "run.resume=true"]
    monkeypatch.setenv("SELFPLAY_FAULT", f"{stage}:2:raise")
    with pytest.raises(InjectedFault, match=f"{stage} of iteration 2"):
        main(args)
    assert [r["iteration"] for r in read_metrics(run_dir)] == [1]
    saved = stage != "score"
    assert (rollout_path(run_dir, 2) / "scores.safetensors").exists() == saved
    assert not (run_dir / "iter_2").exists()
    monkeypatch.delenv("SELFPLAY_FAULT")
    assert main(args) == 0
    resumed, uninterrupted = read_metrics(run_dir), read_metrics(hf_run)
    assert resumed[1]["rollout_reused"] == saved and not uninterrupted[1]["rollout_reused"]
    if saved:  # nothing generated or scored again
        assert resumed[1]["generate_s"] == 0.0 and resumed[1]["score_s"] == 0.0
    assert same(resumed[1]) == same(uninterrupted[1])
    assert not (run_dir / "rollouts").exists() or not any((run_dir / "rollouts").iterdir())  # dropped at commit
    assert_same_weights(run_dir / "iter_2", hf_run / "iter_2")


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
