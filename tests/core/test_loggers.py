"""The loggers: what each backend receives, read back from its own files, and a failing one never stops a run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from omegaconf import OmegaConf

from selfplay.config.schema import Config
from selfplay.core.loggers import TB_DIR, Loggers, samples_markdown, scalars


def config(**log) -> OmegaConf:
    cfg = OmegaConf.structured(Config)
    for key, value in log.items():
        OmegaConf.update(cfg, f"log.{key}", value)
    return cfg


def record(t: int, losses: list[float]) -> dict:
    return {"iteration": t, "win_rate_vs_initial": 0.5 + t / 10, "win_rate_vs_initial_ci": [0.4, 0.7 + t / 100],
            "front": [[1.0, 2.0]], "skipped": "no", "flag": True, "nan": float("nan"),
            "train": {"loss": 0.25 * t, "step_losses": losses, "step_grad_norms": [2 * x for x in losses]},
            "samples": [{"prompt": "Why? | no", "initial": "a\nb", "current": "c", "p_scorer": 0.75}]}


def tensorboard_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / TB_DIR), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_scalars_flatten_the_record_by_hand():
    got = dict(scalars(record(1, [0.5])))
    assert got == {"iteration": 1.0, "win_rate_vs_initial": 0.6, "win_rate_vs_initial_ci_lo": 0.4,
                   "win_rate_vs_initial_ci_hi": 0.71, "train/loss": 0.25}
    table = samples_markdown(record(1, [])["samples"])
    assert table.splitlines() == ["| prompt | initial | current | p_scorer |", "|---|---|---|---|",
                                  "| Why? \\| no | a b | c | 0.750 |"]


def test_tensorboard_gets_every_scalar_and_each_optimizer_step_carrying_on_after_a_resume(tmp_path):
    committed = [record(1, [1.0, 0.9, 0.8])]  # three optimizer steps already committed before the resume
    loggers = Loggers(tmp_path, config(), committed)
    loggers.iteration(record(2, [0.7, 0.6]))
    loggers.iteration(record(3, [0.5]))
    got = tensorboard_scalars(tmp_path)
    loggers.close()
    assert got["win_rate_vs_initial"] == [(2, np.float32(0.7)), (3, np.float32(0.8))]
    assert got["win_rate_vs_initial_ci_hi"] == [(2, np.float32(0.72)), (3, np.float32(0.73))]
    assert got["train_step/loss"] == [(4, np.float32(0.7)), (5, np.float32(0.6)), (6, np.float32(0.5))]
    assert got["train_step/grad_norm"] == [(4, np.float32(1.4)), (5, np.float32(1.2)), (6, np.float32(1.0))]
    assert "front" not in got and "nan" not in got and "flag" not in got


def test_a_wandb_offline_run_writes_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    loggers = Loggers(tmp_path, config(tensorboard=False, **{"wandb.project": "selfplay-test"}), [])
    assert [b.name for b in loggers.backends] == ["wandb"]
    loggers.iteration(record(1, [0.5, 0.4]))
    loggers.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and [b.name for b in loggers.backends] == ["wandb"]
    data = list(runs[0].glob("run-*.wandb"))
    assert len(data) == 1 and data[0].stat().st_size > 0


def test_mlflow_records_the_metrics_by_step(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    loggers = Loggers(tmp_path / "run", config(tensorboard=False, **{"mlflow.uri": uri}), [])
    loggers.iteration(record(1, [0.5, 0.4]))
    loggers.iteration(record(2, [0.3]))
    run_id = loggers.backends[0].run.info.run_id
    loggers.close()
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "win_rate_vs_initial")] == [(1, 0.6), (2, 0.7)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_step/loss")] == [
        (1, 0.5), (2, 0.4), (3, 0.3)]


def test_no_secret_from_the_environment_reaches_the_run_directory(tmp_path, monkeypatch):
    """A W&B key and a hub token in the environment: every logger on, then no file under the run directory
    (config.yaml included) holds either."""
    from selfplay.config.loading import to_yaml

    secrets = {"WANDB_API_KEY": "a" * 36 + "5ec7", "HF_TOKEN": "hf_" + "S3cr3t" * 5, "HUGGING_FACE_HUB_TOKEN": "hf_" + "t0k" * 8}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    cfg = config(**{"wandb.project": "selfplay-test", "mlflow.uri": (tmp_path / "run" / "mlruns").as_uri()})
    (run_dir).mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    loggers = Loggers(run_dir, cfg, [])
    assert sorted(b.name for b in loggers.backends) == ["mlflow", "tensorboard", "wandb"]
    loggers.iteration(record(1, [0.5, 0.4]))
    loggers.close()
    files = [f for f in run_dir.rglob("*") if f.is_file()]
    assert len(files) > 5
    for f in files:
        data = f.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name} written to {f}"


def test_a_failing_logger_warns_once_and_the_others_go_on(tmp_path, monkeypatch, caplog):
    from selfplay.core import loggers as module

    calls = []

    def broken(self, values, step):
        calls.append(step)
        raise ConnectionError("no network")

    monkeypatch.setattr(module.MLflow, "__init__", lambda self, run_dir, cfg: None)
    monkeypatch.setattr(module.MLflow, "scalars", broken)
    with caplog.at_level(logging.WARNING, logger="selfplay.core.loggers"):
        loggers = Loggers(tmp_path, config(**{"mlflow.uri": "http://127.0.0.1:9"}), [])
        loggers.iteration(record(1, [0.5]))
        loggers.iteration(record(2, [0.4]))
        loggers.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["logger mlflow failed and is off for the rest of the run: ConnectionError: no network"]
    assert calls == [1] and [b.name for b in loggers.backends] == ["tensorboard"]
    assert [s for s, _ in tensorboard_scalars(tmp_path)["win_rate_vs_initial"]] == [1, 2]


def test_a_logger_that_cannot_start_is_dropped_with_one_line(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="selfplay.core.loggers"):
        loggers = Loggers(tmp_path, config(tensorboard=False, **{"mlflow.uri": "nosuchscheme://x"}), [])
    assert loggers.backends == []
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("logger mlflow failed")
    loggers.iteration(record(1, [0.5]))  # nothing left to log to: still fine
    loggers.close()


@pytest.mark.parametrize(("elapsed", "done", "left", "text"), [(90.0, 3, 2, "1m 00s"), (4000.0, 1, 1, "1h 06m")])
def test_eta_at_the_mean_pace(elapsed, done, left, text):
    from selfplay.loop.driver import eta

    assert eta(elapsed, done, left) == text
