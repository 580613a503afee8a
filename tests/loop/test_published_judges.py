"""Published judges in the loop (issue 27): PairRM and ArmoRM checkpoints in their authors' layouts, random and tiny,
served by the scorer actor through a whole iteration on the embedded world."""

from __future__ import annotations

import json
import math

import pytest

from selfplay.core.checkpoint import read_metrics
from selfplay.run import main
from tests.models.test_armorm import armorm_checkpoint
from tests.models.test_pairrm import hf_layout

ONE = ["smoke", "run.progress=false", "iter=1", "generator.backend=hf"]


def finite_rates(record: dict) -> bool:
    keys = ("win_rate_vs_initial", "oracle_win_rate_vs_initial")
    return all(0.0 <= record[k] <= 1.0 and math.isfinite(record[k]) for k in keys)


def test_sppo_judged_by_pairrm_with_sppos_aggregation(world, ray_cluster, tmp_path):
    """SPPO's own recipe: PairRM-hf scores the K responses, aggregated as SPPO's scripts do; the source is the
    prompt in the policy's chat template."""
    path, _ = hf_layout(tmp_path)
    run_dir = tmp_path / "run"
    assert main([*ONE, f"run.dir={run_dir}", "algo=sppo", "scorer.kind=pairrm", f"scorer.model={path}",
                 "scorer.aggregate=sppo"]) == 0
    (record,) = read_metrics(run_dir)
    assert finite_rates(record) and record["train"]["loss"] > 0
    assert "kind: pairrm" in (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize("directional", [False, True])
def test_armorm_judges_by_its_score_or_along_a_direction(world, ray_cluster, tmp_path, directional):
    """ArmoRM read natively (its modeling_custom.py raises if imported): SPPO on its gated score, or GPO along a
    fixed direction over helpfulness (row 0) and verbosity (row 4), the directions in the system prompts."""
    path = armorm_checkpoint(tmp_path / "ArmoRM")
    run_dir = tmp_path / "run"
    algo = ["algo=gpo", "directions.fixed=[0.8,-0.6]"] if directional else ["algo=sppo"]
    assert main([*ONE, f"run.dir={run_dir}", *algo, "scorer.kind=armorm", f"scorer.model={path}"]) == 0
    (record,) = read_metrics(run_dir)
    assert finite_rates(record)
    saved = run_dir / "iter_1" / "directions.json"
    assert saved.exists() == directional
    if directional:
        assert json.loads(saved.read_text()) == {"attributes": ["helpfulness", "verbosity"]}
