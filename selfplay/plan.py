"""``python -m selfplay.plan [preset] key=value ...``: what each actor of that run needs in memory and whether it
fits, from the resolved config and the models' Hugging Face configs (no weights are loaded; the estimates are
in ``selfplay.config.memory``).  Exits 2 when the plan cannot fit, saying what to change; ``selfplay.run`` makes
the same check before any actor loads a model (``placement.check=false`` skips it)."""

from __future__ import annotations

import sys

from selfplay.config.loading import load_or_report


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    cfg = load_or_report(argv)
    if cfg is None:
        return 2
    from selfplay.config.memory import plan, table
    from selfplay.run import resolve_sources, start_errors

    try:
        sources, _, _ = resolve_sources(cfg)
        needs, problems = plan(cfg, sources.policy, sources.scorer)
    except start_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(needs))
    for p in problems:
        print(f"does not fit: {p}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
