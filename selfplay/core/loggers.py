"""Where a run's metrics go besides ``metrics.jsonl``: TensorBoard (on by default), W&B and MLflow.

After each committed iteration the driver hands ``Loggers.iteration`` the iteration's metrics record (with its
sample responses).  Every backend gets the same things:
- every numeric metric as a scalar at step = iteration (nested keys joined by ``/``, an interval ``[lo, hi]``
  as ``_lo`` and ``_hi``);
- the training loss and gradient norm of every optimizer step (``train_step/loss``, ``train_step/grad_norm``) at
  a global step counted over the whole run (a resumed run carries on from the steps already committed);
- the samples as a text table.
Each backend flushes after every iteration, so the last one is never lost.  A backend that fails (not installed,
no network, a bad key) warns once, naming itself and the error, and is dropped; the run goes on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

TB_DIR = "tb"


def scalars(record: dict, prefix: str = "") -> Iterator[tuple[str, float]]:
    """The record's numbers as (name, value): nested dicts joined by ``/``, a two-number ``*_ci`` as ``*_ci_lo``
    and ``*_ci_hi``; booleans, strings, other lists and non-finite values are not scalars."""
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from scalars(value, f"{name}/")
        elif key.endswith("_ci") and isinstance(value, list) and len(value) == 2:
            yield from ((f"{name}_{end}", float(v)) for end, v in zip(("lo", "hi"), value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield name, float(value)


def samples_markdown(samples: list[dict]) -> str:
    """The samples as a Markdown table (TensorBoard renders it): one row a prompt."""
    from selfplay.core.html_report import markdown_table

    keys = list(samples[0]) if samples else []
    return markdown_table(keys, [[f"{s[k]:.3f}" if isinstance(s[k], float) else str(s[k]) for k in keys]
                                 for s in samples])


class TensorBoard:
    name = "tensorboard"

    def __init__(self, run_dir: Path, cfg) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / TB_DIR))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def text(self, key: str, markdown: str, step: int) -> None:
        self.writer.add_text(key, markdown, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    name = "wandb"

    def __init__(self, run_dir: Path, cfg) -> None:
        import wandb

        w = cfg.log.wandb
        # one W&B run per run directory: a resumed run continues it
        run_id = "".join(c if c.isalnum() else "-" for c in run_dir.resolve().as_posix())[-64:].strip("-")
        self.run = wandb.init(project=w.project, entity=w.entity, name=w.name or run_dir.name, dir=str(run_dir),
                              id=run_id, resume="allow", config=_plain(cfg))
        self.run.define_metric("train_step/*", step_metric="train_step/global_step")

    def scalars(self, values: dict[str, float], step: int) -> None:
        axis = "train_step/global_step" if any(k.startswith("train_step/") for k in values) else "iteration"
        self.run.log({**values, axis: step})

    def text(self, key: str, markdown: str, step: int) -> None:
        self.run.log({key: markdown, "iteration": step})

    def flush(self) -> None:
        pass  # wandb.log hands each call to its writer at once

    def close(self) -> None:
        self.run.finish()


class MLflow:
    name = "mlflow"

    def __init__(self, run_dir: Path, cfg) -> None:
        import mlflow

        self.mlflow = mlflow
        if cfg.log.mlflow.uri.startswith("file:"):  # MLflow 3 refuses its file store unless asked for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(cfg.log.mlflow.uri)
        mlflow.set_experiment(cfg.log.mlflow.experiment)
        self.run = mlflow.start_run(run_name=run_dir.name)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def text(self, key: str, markdown: str, step: int) -> None:
        self.mlflow.log_text(markdown, f"{key}/iter_{step}.md")

    def flush(self) -> None:
        pass  # every log_metrics call is written when made

    def close(self) -> None:
        self.mlflow.end_run()


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


class Loggers:
    """The backends the config asks for (``log.*``), each guarded: its first failure warns and drops it."""

    def __init__(self, run_dir: Path, cfg, committed: list[dict]) -> None:
        wanted = [(TensorBoard, cfg.log.tensorboard), (WandB, cfg.log.wandb.project is not None),
                  (MLflow, cfg.log.mlflow.uri is not None)]
        self.backends = []
        for backend, on in wanted:
            if on:
                try:
                    self.backends.append(backend(run_dir, cfg))
                except Exception as e:  # noqa: BLE001 - a logger never stops a run
                    self._warn(backend.name, e)
        # the optimizer steps already committed (a resumed run): the global step carries on after them
        self.global_step = sum(len(r.get("train", {}).get("step_losses") or []) for r in committed)

    @staticmethod
    def _warn(name: str, error: Exception) -> None:
        log.warning("logger %s failed and is off for the rest of the run: %s: %s", name, type(error).__name__, error)

    def _each(self, call) -> None:
        for b in list(self.backends):
            try:
                call(b)
            except Exception as e:  # noqa: BLE001 - a logger never stops a run
                self._warn(b.name, e)
                self.backends.remove(b)

    def iteration(self, record: dict) -> None:
        """Iteration ``record['iteration']``: its scalars, its optimizer steps, its samples; then flush."""
        t, samples = record["iteration"], record.get("samples") or []
        values = dict(scalars({k: v for k, v in record.items() if k != "samples"}))
        train = record.get("train") or {}
        steps = list(zip(train.get("step_losses") or [], train.get("step_grad_norms") or []))
        self._each(lambda b: b.scalars(values, t))
        for i, (loss, norm) in enumerate(steps):
            step = self.global_step + i + 1
            self._each(lambda b: b.scalars({"train_step/loss": loss, "train_step/grad_norm": norm}, step))
        self.global_step += len(steps)
        if samples:
            self._each(lambda b: b.text("samples", samples_markdown(samples), t))
        self._each(lambda b: b.flush())

    def close(self) -> None:
        self._each(lambda b: b.close())
