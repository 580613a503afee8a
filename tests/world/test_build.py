"""The embedded world's cache keys: the core world and the parts built on first use are keyed apart."""

from __future__ import annotations

import json
import random

import pytest
from omegaconf import OmegaConf

from selfplay.config.loading import load_config
from selfplay.config.schema import ConfigError, WorldConfig
from selfplay.world import corpus
from selfplay.world.build import World, world_key


def test_lazily_built_settings_key_their_own_part_only(tmp_path):
    """Changing the steerable warm start's, the attribute rows' or sft.jsonl's settings leaves the world's key
    (policy, tokenizer, GPM) alone and moves only that part; the world's own settings move the key."""
    base = OmegaConf.structured(WorldConfig)
    world = World.at(tmp_path)
    for section, key, value in [("steerable", "steps", 10), ("attributes", "missing_share", 0.0),
                                ("sft_data", "rows", 5)]:
        changed = OmegaConf.merge(base, {section: {key: value}})
        assert world_key(changed) == world_key(base)
        assert world.part(section, changed) != world.part(section, base)
        others = [s for s in ("steerable", "attributes", "sft_data") if s != section]
        assert all(world.part(s, changed) == world.part(s, base) for s in others)
    assert world_key(OmegaConf.merge(base, {"pm_steps": 7})) != world_key(base)


def test_attribute_rows_follow_their_settings(tmp_path):
    """world.attributes sets the rows written on first use: their number and the share of missing labels."""
    prompts = corpus.make_prompts(8, random.Random(0))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    world = World.at(tmp_path)
    cfg = OmegaConf.merge(OmegaConf.structured(WorldConfig),
                          {"attributes": {"train_rows": 300, "test_rows": 7, "missing_share": 0.5}})
    data = world.attribute_data(cfg)
    rows = [json.loads(line) for line in open(f"{data}/train.jsonl")]
    assert len(rows) == 300 and sum(1 for _ in open(f"{data}/test.jsonl")) == 7
    missing = sum(any(v is None for v in r.values()) for r in rows)
    assert missing == 300  # share 0.5 per label, two labels: one is always dropped (never both)
    assert all(sum(v is None for v in r.values()) == 1 for r in rows)


@pytest.mark.parametrize(("arg", "needle"), [
    ("world.steerable.angles=[10,-10]", "world.steerable.angles must be [lo, hi]"),
    ("world.steerable.candidates=0", "world.steerable.candidates must be >= 1"),
    ("world.attributes.missing_share=0.7", "world.attributes.missing_share must lie in [0, 0.5]"),
    ("world.sft_data.rows=0", "world.sft_data.rows must be >= 1"),
    ("world.length_by_kind=-1", "world.length_by_kind must be >= 0"),
])
def test_bad_world_settings_are_refused(arg, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_config([arg])
