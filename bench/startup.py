"""Start-up (issue 29): from the driver's start to its first generate call, overlapped against staged.

    python bench/startup.py [--repeats 2] [--set key=value ...]

Each start is a fresh ``python`` process (imports are what is measured), the two kinds taking turns:

- **overlapped**: the real entry point, ``selfplay.run.main(["iter=1", "run.dir=TMP", "run.progress=false",
  *overrides])``: the inputs are checked on a thread while Ray starts, and the actors' processes start as soon
  as Ray is up, importing their roles' libraries before their specs come (``selfplay.loop.startup``);
- **staged**: the same pieces one after another, as the start was before: ``check_inputs``, then ``ray.init``,
  then ``start_workers`` (processes that get their specs at once), waiting for every actor; then the
  initial evaluation's generate call.

The child wraps the functions it times (nothing else changes) and stops at the return of the first generate
call (``selfplay.loop.stages.generate``; iteration 0's held-out samples).  Times are seconds from the moment the
bench launched the child: ``config`` (the driver's imports and the config), ``checks`` (end of
``check_inputs``), ``ray`` (end of ``ray.init``), ``actors`` (every actor set up: ``start_workers`` returned),
``generate`` (the first generate call made) and ``generated`` (its return).  The world must be built (a first
``python -m selfplay.run`` builds it): a cold world's build would be timed too.  It prints the mean of each
kind and the ratio staged / overlapped of the time to the first generate call.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("config", "checks", "ray", "actors", "generate", "generated")


class FirstGenerate(Exception):
    """Raised after the first generate call returns: the child has what it measures."""


def child(mode: str, t0: float, overrides: list[str]) -> dict:
    """One start of ``mode``; its phases' times from ``t0`` (the parent's clock at launch)."""
    times: dict[str, float] = {}

    def mark(name: str) -> None:
        times.setdefault(name, round(time.time() - t0, 3))

    def timed(owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            value = original(*args, **kwargs)
            mark(name)
            return value
        setattr(owner, attr, wrapper)

    import ray

    import selfplay.loop.stages as stages
    import selfplay.run as entry

    original_generate = stages.generate

    def generate(*args, **kwargs):
        mark("generate")
        original_generate(*args, **kwargs)
        mark("generated")
        raise FirstGenerate

    stages.generate = generate
    for owner, attr, name in ((entry, "load_or_report", "config"), (entry, "check_inputs", "checks"),
                              (ray, "init", "ray"), (entry, "start_workers", "actors")):
        timed(owner, attr, name)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["iter=1", f"run.dir={tmp}/run", "run.progress=false", *overrides]
        try:
            if mode == "overlapped":
                entry.main(argv)
            else:
                cfg = entry.load_or_report(argv)
                sources, _, judge, prompts, run_dir, last = entry.check_inputs(cfg)
                ray.init(address=cfg.run.ray_address, include_dashboard=False)
                workers = entry.start_workers(cfg, sources, run_dir, last)
                stages.sample_eval(workers, prompts, cfg)
        except FirstGenerate:
            pass
        finally:
            if ray.is_initialized():
                ray.shutdown()
    missing = [p for p in PHASES if p not in times]
    if missing:
        raise SystemExit(f"the {mode} start never reached {', '.join(missing)}")
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="starts of each kind (they take turns)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every start")
    ap.add_argument("--child", choices=("overlapped", "staged"), help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("STARTUP " + json.dumps(child(args.child, args.t0, args.set)), flush=True)
        return 0
    runs: dict[str, list[dict]] = {"staged": [], "overlapped": []}
    for _ in range(args.repeats):
        for mode in runs:
            cmd = [sys.executable, __file__, "--child", mode, "--t0", repr(time.time()), "--set", *args.set]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            lines = [line for line in out.stdout.splitlines() if line.startswith("STARTUP ")]
            if out.returncode or not lines:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"the {mode} start failed (exit code {out.returncode})")
            runs[mode].append(json.loads(lines[-1][len("STARTUP "):]))
            print(f"{mode:>10}: " + "  ".join(f"{p} {runs[mode][-1][p]:5.1f}" for p in PHASES), flush=True)
    mean = {mode: {p: sum(r[p] for r in rs) / len(rs) for p in PHASES} for mode, rs in runs.items()}
    print(f"\nseconds from the driver's launch (mean of {args.repeats}):")
    print(f"{'':>10}  " + "  ".join(f"{p:>9}" for p in PHASES))
    for mode, m in mean.items():
        print(f"{mode:>10}  " + "  ".join(f"{m[p]:9.1f}" for p in PHASES))
    ratio = mean["staged"]["generate"] / mean["overlapped"]["generate"]
    print(f"\nfirst generate call: staged {mean['staged']['generate']:.1f} s, overlapped "
          f"{mean['overlapped']['generate']:.1f} s: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
