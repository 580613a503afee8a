"""What watching a run costs (issue 15): the report of a 50-iteration run, and the loggers against an iteration.

    python bench/report.py [--run RUN] [--iterations 50]

Takes the metrics lines of a real run (``--run``; by default it first runs two iterations of the ``smoke``
preset on the embedded world, transformers backend, into a temporary directory), repeats them into a run of
``--iterations`` iterations (iteration numbers and stage times as they were), and times:

- **the report**: ``selfplay.core.html_report.write`` of that run (goal: under 5 s);
- **the loggers**: ``Loggers.iteration`` (TensorBoard, the default) for every iteration, against the iteration's
  own seconds (the sum of its stage times): their ratio (goal: under 1%), and the report's per-iteration
  rewrite against the same.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def repeated(records: list[dict], n: int) -> list[dict]:
    return [{**records[i % len(records)], "iteration": i + 1} for i in range(n)]


def main() -> None:
    from omegaconf import OmegaConf

    from selfplay.config.schema import Config
    from selfplay.core.checkpoint import read_metrics
    from selfplay.core.loggers import Loggers
    from selfplay.core.html_report import REPORT, stage_seconds, write
    from selfplay.run import main as run_main

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="a run directory to take the metrics lines from")
    ap.add_argument("--iterations", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    source = args.run
    if source is None:
        source = tmp / "smoke"
        assert run_main(["smoke", "iter=2", f"run.dir={source}", "generator.backend=hf", "run.progress=false",
                         "log.report=false", "log.tensorboard=false"]) == 0
    records = repeated(read_metrics(source), args.iterations)
    run = tmp / "long"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    start = time.perf_counter()
    write({"long": run}, run / REPORT)
    report_s = time.perf_counter() - start

    loggers = Loggers(run, OmegaConf.structured(Config), [])
    logging_s = []
    for r in records:
        start = time.perf_counter()
        loggers.iteration(r)
        logging_s.append(time.perf_counter() - start)
    loggers.close()
    iteration_s = [stage_seconds(r) for r in records]

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"report of {args.iterations} iterations: {report_s:.2f} s (goal < 5 s)")
    print(f"loggers (TensorBoard) per iteration: {mean(logging_s) * 1000:.1f} ms; an iteration: {mean(iteration_s):.2f} s;"
          f" ratio {mean(logging_s) / mean(iteration_s):.4f} (goal < 0.01)")
    print(f"the report's rewrite after an iteration, at {args.iterations} iterations: ratio "
          f"{report_s / mean(iteration_s):.3f} of an iteration of the source run")


if __name__ == "__main__":
    main()
