"""The run directory of ``selfplay.run``: config.yaml records the resolved sources; resume compares with it."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from selfplay.config.loading import load_config
from selfplay.loop.sources import RunError, Sources
from selfplay.run import prepare_run_dir

SOURCES = Sources("scorer_dir", "scorer_dir", "prompts.jsonl", None, "policy_dir", "policy_dir")


def test_config_yaml_records_the_sources_and_resume_compares_with_it(tmp_path):
    run = tmp_path / "run"
    assert prepare_run_dir(load_config([f"run.dir={run}"]), SOURCES) == (run.resolve(), 0)
    saved = OmegaConf.load(run / "config.yaml")
    assert (saved.policy.model, saved.scorer.model, saved.data.prompts, saved.algo.beta) == (
        "policy_dir", "scorer_dir", "prompts.jsonl", 2.0)

    # a run saved before algo.length_normalize existed resumes: the missing key reads its default
    del saved.algo["length_normalize"]
    (run / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    assert prepare_run_dir(load_config([f"run.dir={run}", "run.resume=true"]), SOURCES)[1] == 0

    # where the learner runs may change (its checkpoints are full); what it computes may not
    assert prepare_run_dir(load_config([f"run.dir={run}", "run.resume=true", "train.world_size=2",
                                        "train.activation_checkpointing=true", "train.num_cpus=1"]), SOURCES)[1] == 0
    with pytest.raises(RunError, match="differ.*train"):
        prepare_run_dir(load_config([f"run.dir={run}", "run.resume=true", "train.lr=1e-3"]), SOURCES)
    with pytest.raises(RunError, match="differ.*algo"):
        prepare_run_dir(load_config([f"run.dir={run}", "run.resume=true", "algo.beta=3"]), SOURCES)
    with pytest.raises(RunError, match="differ.*policy"):
        other = Sources("scorer_dir", "scorer_dir", "prompts.jsonl", None, "another_policy", "another_policy")
        prepare_run_dir(load_config([f"run.dir={run}", "run.resume=true"]), other)
    with pytest.raises(RunError, match="already holds a run"):
        prepare_run_dir(load_config([f"run.dir={run}"]), SOURCES)
