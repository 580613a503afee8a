"""``python -m selfplay.report RUN [RUN ...] [--out PATH] [--embed] [--format html|md]``: a run's report.

One run: ``RUN/report.html`` with its plots in ``RUN/report_files/`` (``--embed`` puts them in the page).  Several
runs: ``report.html`` here (or ``--out``), with their win rates overlaid and a table comparing them.
``--format md`` prints a Markdown summary instead.  ``selfplay.run`` rewrites ``RUN/report.html`` after every
iteration (``selfplay.core.html_report``), so it can stay open in a browser during a run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfplay.core.checkpoint import read_metrics
from selfplay.core.html_report import REPORT, markdown, write


def run_names(paths: list[Path]) -> dict[str, Path]:
    """Each run directory by a name: its own, or its parent's too where two share a name."""
    names = [p.name for p in paths]
    return {(f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name): p for p in paths}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m selfplay.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (each with metrics.jsonl)")
    ap.add_argument("--out", type=Path, help="the HTML file (default: RUN/report.html, or ./report.html for several)")
    ap.add_argument("--embed", action="store_true", help="the plots inside the page instead of beside it")
    ap.add_argument("--format", choices=("html", "md"), default="html")
    args = ap.parse_args(argv)
    for run in args.runs:
        if not (run / "metrics.jsonl").exists():
            print(f"error: {run} has no metrics.jsonl (not a run directory, or no iteration finished yet)",
                  file=sys.stderr)
            return 2
    runs = run_names(args.runs)
    if args.format == "md":
        print(markdown({name: read_metrics(path) for name, path in runs.items()}))
        return 0
    out = args.out or (args.runs[0] / REPORT if len(args.runs) == 1 else Path(REPORT))
    print(write(runs, out, args.embed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
