"""``python -m selfplay.plan [preset] key=value ...``: what each actor of that run needs in memory and whether it
fits, from the resolved config and the models' Hugging Face configs (no weights are loaded; the estimates are
in ``selfplay.config.memory``).  Exits 2 when the plan cannot fit, saying what to change; ``selfplay.run`` makes
the same check before any actor starts (``placement.check=false`` skips it)."""

from __future__ import annotations

import sys

from selfplay.config.loading import load_config
from selfplay.config.schema import ConfigError


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        cfg = load_config(argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from selfplay.config.memory import PlanError, plan, table
    from selfplay.core.jsonl import DataError
    from selfplay.core.lm import ModelLoadError
    from selfplay.loop.plan import RunError, resolve_data, resolve_policy

    try:
        data, _ = resolve_data(cfg)
        sources = resolve_policy(cfg, data, cfg.scorer.kind == "multi_objective")
        needs, problems = plan(cfg, sources.policy, sources.scorer)
    except (RunError, DataError, ModelLoadError, PlanError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(needs))
    for p in problems:
        print(f"does not fit: {p}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
