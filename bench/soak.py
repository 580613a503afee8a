"""Soak (issue 17): the self-play loop for many iterations; the memory of every process, the time outside the stages.

    python bench/soak.py [--iterations 30] [--preset NAME] [--set key=value ...] [--run-dir DIR] [--interval 0.5]
                         [--warmup 2]
    python bench/soak.py --reprint RUN/soak.json [--warmup W]      (the table again, from the saved samples)

Runs the real entry point, ``selfplay.run.main(["iter=N", "run.dir=DIR", "run.progress=false", PRESET,
*overrides])``, in this process, on a local Ray cluster the bench starts itself (``ray.init(address="local",
include_dashboard=False)``; main leaves a caller's cluster running, so ``run.ray_address`` is not used).
``--run-dir`` defaults to a new temporary directory, which is kept: the run and ``soak.json`` stay there.

**Memory.** The processes watched: the driver (this process), every actor under the name the run gives it
(``generator 0``, ``scorer``, ``learner rank 0``, ...: the bench wraps ``selfplay.run.start_workers`` and asks
each actor its pid once, as the actors are ready and before the loop starts), and Ray's ``raylet`` and
``gcs_server`` (their own processes: the worker processes the raylet starts are the actors' rows).  Processes an
actor starts (if any) are one more row, ``<actor> children``, their resident memory summed.  A thread samples each
one's resident memory (RSS, psutil) every ``--interval`` seconds, tagged with the iteration in progress: the
number of lines of ``RUN/metrics.jsonl`` + 1 (0: start-up and the initial evaluation, before
``RUN/eval/iter_0.json`` is written).  Per process and iteration it keeps the number of samples, the last and
the peak; the figures below are the per-iteration **peaks**.

**Growth.** Per process, a least-squares line through (iteration, peak RSS) over iterations ``--warmup`` + 1
to N (default: from the 3rd; the first two are warm-up and left out: the engine's and the allocators' pools
fill there).  The slope is in MiB per iteration; the noise is the residual standard deviation (n - 2 degrees
of freedom).  Rule: the growth over the fitted span, |slope| x (N - first fitted iteration), is "no growth
beyond noise" when it is at most max(3 x noise, 1 MiB); otherwise "grows" or "shrinks" with the MiB over the
span.  Fewer than 3 fitted iterations: "too few iterations".

**Time outside the stages.** Each metrics line carries every stage's seconds (``generate_s``, ``score_s``,
``train_s``, ``sync_s``, ``eval_s``, ``checkpoint_s``; colocated, ``sleep_s`` and ``wake_s``: every key ending in
``_s`` but the rates ``*_per_s``).  Iteration t's wall time is the time between the commits of iterations t - 1
and t: ``metrics.jsonl`` is rewritten atomically at each commit, so its modification time, read as the
sampler first sees the new line, is the commit's time; iteration 1 starts when the initial evaluation is
written (``eval/iter_0.json``'s modification time), just before the loop's first iteration.  So iteration t's
wall time includes what the driver does after iteration t - 1's commit (rollout clean-up, the plot, the
loggers, the report, the printed line); the last iteration's after-commit work is not counted.  Per iteration
the share outside the stages is 1 - sum(stage seconds) / wall; it prints their mean and max and the overall
share 1 - sum(all stage seconds) / sum(walls).  (An iteration whose line the sampler missed because two
commits fell into one interval has no wall time and is left out, with a warning.)

Prints the number of iterations done, the seconds from ``ray.init`` to main's return (start-up included), then
one Markdown row per process: its pid, the peak RSS at iteration ``--warmup`` + 1 and at the last
iteration (MiB), the slope, the noise, the verdict; then the outside-stages line and the wall times.  Writes
every sample, the per-iteration figures and the table as JSON to ``RUN/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

MIB = 2**20
NOISE_FACTOR, NOISE_FLOOR_MIB = 3.0, 1.0


class Sampler:
    """Samples the RSS of named processes every ``every_s`` seconds, tagged with the iteration in progress, and the
    commit times of the run's iterations (``metrics.jsonl``'s modification time as each new line appears)."""

    def __init__(self, run_dir: Path, every_s: float):
        self.run_dir, self.every_s = run_dir, every_s
        self.pids: dict[str, int] = {"driver": os.getpid()}
        self.actors: set[str] = set()  # the names whose processes' children are a row of their own
        self.samples: dict[str, list] = {}  # name -> [[seconds since start, iteration, rss bytes], ...]
        self.commits: dict[int, float | None] = {}  # iteration -> commit time (epoch seconds); None: missed
        self.loop_start: float | None = None
        self.t0 = time.time()
        self._procs: dict[int, psutil.Process] = {}
        self._lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-sampler")

    def watch(self, names: dict[str, int], actors: bool = False) -> None:
        if actors:
            self.actors.update(names)
        self.pids.update(names)  # a dict's update is atomic under the GIL; _run copies it each time

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._poll_metrics()  # a commit that fell after the last sample

    def _process(self, pid: int) -> psutil.Process:
        if pid not in self._procs:
            self._procs[pid] = psutil.Process(pid)
        return self._procs[pid]

    def _poll_metrics(self) -> int:
        """The iteration in progress (0 before the loop starts); records new commits."""
        if self.loop_start is None:
            try:
                self.loop_start = (self.run_dir / "eval" / "iter_0.json").stat().st_mtime
            except FileNotFoundError:
                return 0
        path = self.run_dir / "metrics.jsonl"
        try:
            mtime, data = path.stat().st_mtime, path.read_bytes()
        except FileNotFoundError:
            return 1
        lines = data.count(b"\n")
        if lines > self._lines:
            for t in range(self._lines + 1, lines):  # two commits within one interval: the earlier one's time is lost
                self.commits[t] = None
            self.commits[lines] = mtime
            self._lines = lines
        return self._lines + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            iteration = self._poll_metrics()
            now = round(time.time() - self.t0, 3)
            for name, pid in list(self.pids.items()):
                try:
                    proc = self._process(pid)
                    rss = proc.memory_info().rss
                    children = proc.children(recursive=True) if name in self.actors else []
                    child_rss = sum(c.memory_info().rss for c in children)
                except psutil.Error:  # gone (the run is ending) or a child that ended between the calls
                    continue
                self.samples.setdefault(name, []).append([now, iteration, rss])
                if children:
                    self.samples.setdefault(f"{name} children", []).append([now, iteration, child_rss])
            self._stop.wait(self.every_s)


def ray_processes() -> dict[str, int]:
    """The local cluster's raylet and GCS server: processes this one started with ray.init."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            name = child.name()
        except psutil.Error:
            continue
        if name in ("raylet", "gcs_server") and name not in found:
            found[name] = child.pid
    return found


def watch_workers(sampler: Sampler):
    """Wrap ``selfplay.run.start_workers`` so that the started actors' pids go to the sampler under the run's own
    names for them; returns a function that undoes the wrap."""
    import ray

    import selfplay.run as entry

    original = entry.start_workers

    def start_workers(*args, **kwargs):
        workers = original(*args, **kwargs)
        pids = ray.get([actor.__ray_call__.remote(lambda self: os.getpid()) for actor in workers.actors()])
        sampler.watch(dict(zip(workers.actor_names(), pids)), actors=True)
        return workers

    entry.start_workers = start_workers
    return lambda: setattr(entry, "start_workers", original)


def per_iteration(samples: list, last_iteration: int) -> dict[int, dict]:
    """Per iteration (1..last_iteration): the number of samples, the last and the peak RSS, in MiB."""
    out: dict[int, dict] = {}
    for _, t, rss in samples:
        if 1 <= t <= last_iteration:
            row = out.setdefault(t, {"n": 0, "last": 0.0, "peak": 0.0})
            row["n"] += 1
            row["last"] = rss / MIB
            row["peak"] = max(row["peak"], rss / MIB)
    return out


def fit(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares slope of y on x and the residual standard deviation (n - 2 degrees of freedom); None with
    fewer than 3 points."""
    n = len(points)
    if n < 3:
        return None
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    residuals = [y - (my + slope * (x - mx)) for x, y in points]
    return slope, math.sqrt(sum(r * r for r in residuals) / (n - 2))


def verdict(slope: float, noise: float, span: int) -> str:
    growth = slope * span
    if abs(growth) <= max(NOISE_FACTOR * noise, NOISE_FLOOR_MIB):
        return "no growth beyond noise"
    return f"{'grows' if growth > 0 else 'shrinks'} {abs(growth):.1f} MiB over {span} iterations"


def memory_rows(sampler: Sampler, iterations: int, warmup: int) -> list[dict]:
    rows = []
    first = warmup + 1
    for name, samples in sampler.samples.items():
        by_t = per_iteration(samples, iterations)
        points = [(t, by_t[t]["peak"]) for t in sorted(by_t) if t >= first]
        fitted = fit(points)
        row = {"process": name, "pid": sampler.pids.get(name), "per_iteration": by_t,
               "rss_first_mib": by_t[first]["peak"] if first in by_t else None,
               "rss_last_mib": by_t[iterations]["peak"] if iterations in by_t else None,
               "slope_mib_per_iter": None, "noise_mib": None, "verdict": "too few iterations"}
        if fitted is not None:
            span = points[-1][0] - points[0][0]
            row.update(slope_mib_per_iter=fitted[0], noise_mib=fitted[1], verdict=verdict(*fitted, span))
        rows.append(row)
    return rows


def stage_seconds(record: dict) -> float:
    return sum(v for k, v in record.items()
               if k.endswith("_s") and not k.endswith("_per_s") and isinstance(v, (int, float)))


def timing_rows(sampler: Sampler, records: list[dict]) -> list[dict]:
    """Per iteration: wall seconds, stage seconds and the share outside the stages (None where the wall is unknown)."""
    rows, previous = [], sampler.loop_start
    for record in records:
        t = record["iteration"]
        commit = sampler.commits.get(t)
        wall = commit - previous if commit is not None and previous is not None else None
        stages = stage_seconds(record)
        rows.append({"iteration": t, "wall_s": wall, "stages_s": stages,
                     "outside_share": 1 - stages / wall if wall else None})
        previous = commit
    return rows


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summarize(sampler, records: list[dict], iterations: int, warmup: int, rc: int | str, run_s: float,
              run_dir: Path) -> dict:
    """Print the table and the outside-stages line; return them for the JSON."""
    done = len(records)
    memory = memory_rows(sampler, done, warmup)
    timing = timing_rows(sampler, records)
    known = [r for r in timing if r["outside_share"] is not None]
    missed = [r["iteration"] for r in timing if r["outside_share"] is None]
    first = warmup + 1

    print(f"\n{done} of {iterations} iterations (exit code {rc}); {run_s:.1f} s from ray.init to the run's end; "
          f"run dir {run_dir}\n")
    print(f"| process | pid | RSS iter {first} (MiB) | RSS iter {done} (MiB) | slope (MiB/iter) | noise (MiB) "
          "| verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in memory:
        print(f"| {r['process']} | {r['pid'] if r['pid'] is not None else '-'} | {fmt(r['rss_first_mib'])} "
              f"| {fmt(r['rss_last_mib'])} | {fmt(r['slope_mib_per_iter'], 2)} | {fmt(r['noise_mib'], 2)} "
              f"| {r['verdict']} |")
    print(f"\n(peak RSS per iteration; fit over iterations {first}-{done}, the first {warmup} left out as "
          f"warm-up; no growth beyond noise: |slope| x span <= max({NOISE_FACTOR:g} x noise, "
          f"{NOISE_FLOOR_MIB:g} MiB))")
    if known:
        shares = [r["outside_share"] for r in known]
        worst = max(known, key=lambda r: r["outside_share"])
        wall, stages = sum(r["wall_s"] for r in known), sum(r["stages_s"] for r in known)
        print(f"\ntime outside the stages: mean {100 * statistics.mean(shares):.1f}%, max "
              f"{100 * worst['outside_share']:.1f}% (iteration {worst['iteration']}), overall "
              f"{100 * (1 - stages / wall):.1f}% ({wall - stages:.1f} s of {wall:.1f} s over {len(known)} "
              f"iterations); wall per iteration {min(r['wall_s'] for r in known):.1f}-"
              f"{max(r['wall_s'] for r in known):.1f} s")
    if missed:
        print(f"warning: no wall time for iterations {missed} (two commits within one sampling interval)")
    return {"memory": memory, "timing": timing}


class Saved:
    """A finished soak's sampler, read back from its ``soak.json`` (``--reprint``)."""

    def __init__(self, saved: dict):
        self.pids, self.loop_start = saved["pids"], saved["loop_start"]
        self.commits = {int(t): c for t, c in saved["commits"].items()}
        self.samples = {name: s["rows"] for name, s in saved["samples"].items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--preset", default=None, help="a preset of configs/ (e.g. smoke); default: none")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override passed to the run (repeatable)")
    ap.add_argument("--run-dir", default=None, help="default: a new temporary directory (kept)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    ap.add_argument("--warmup", type=int, default=2, help="first iterations left out of the growth fit")
    ap.add_argument("--reprint", default=None, metavar="RUN/soak.json",
                    help="run nothing: print the table again from a finished soak's samples (e.g. with another "
                         "--warmup)")
    args = ap.parse_args()

    from selfplay.core.checkpoint import read_metrics

    if args.reprint:
        path = Path(args.reprint)
        saved = json.loads(path.read_text())
        summarize(Saved(saved), read_metrics(path.parent), saved["iterations_asked"], args.warmup,
                  saved["exit_code"], saved["run_s"], path.parent.resolve())
        return 0

    import ray

    import selfplay.run as entry

    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="soak-")).resolve()
    argv = [f"iter={args.iterations}", f"run.dir={run_dir}", "run.progress=false",
            *([args.preset] if args.preset else []), *args.set]
    print(f"soak: python -m selfplay.run {' '.join(argv)}", flush=True)

    sampler = Sampler(run_dir, args.interval)
    sampler.start()
    began = time.time()
    ray.init(address="local", include_dashboard=False)
    sampler.watch(ray_processes())
    unwrap = watch_workers(sampler)
    try:
        rc = entry.main(argv)
    finally:
        unwrap()
        sampler.stop()
        run_s = time.time() - began
        ray.shutdown()

    records = read_metrics(run_dir)
    summary = summarize(sampler, records, args.iterations, args.warmup, rc, run_s, run_dir)
    out = run_dir / "soak.json"
    out.write_text(json.dumps({
        "argv": argv, "exit_code": rc, "iterations": len(records), "iterations_asked": args.iterations,
        "interval_s": args.interval, "warmup": args.warmup, "run_s": run_s, "loop_start": sampler.loop_start,
        "t0": sampler.t0, "pids": sampler.pids, "commits": sampler.commits, **summary,
        "samples": {name: {"columns": ["seconds", "iteration", "rss_bytes"], "rows": rows}
                    for name, rows in sampler.samples.items()},
    }, indent=1))
    print(f"\nraw samples: {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
