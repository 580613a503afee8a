"""The run configuration: schema defaults, presets, overrides, and errors that name the key at fault."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from selfplay.config.loading import help_text, load_config, presets, to_yaml
from selfplay.config.schema import ALGORITHM_DEFAULTS, CONFIG_DIR, Config, ConfigError


def test_defaults_load():
    cfg = load_config([])
    assert cfg.iter == 3
    assert cfg.generator.k == 4
    assert cfg.generator.backend == "vllm"
    assert cfg.scorer.kind == "gpm" and cfg.scorer.tau == 0.1
    assert cfg.algo.name == "gpo" and cfg.algo.beta == 2.0
    assert cfg.policy.model is None and cfg.data.prompts is None
    assert cfg.train.batch_size % cfg.train.micro_batch_size == 0
    assert cfg.algo.pairs == "all" and cfg.algo.reference == "previous" and cfg.algo.eta is None
    assert cfg.run.stream is False  # staged: generate everything, then score
    # every default lives in the schema, and validation writes nothing into the config
    schema = OmegaConf.structured(Config)
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(schema)
    assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(schema, resolve=True)


@pytest.mark.parametrize(("preset", "overrides"), [
    ("dpo", ["algo.pairs=all_pairs"]), ("ipo", []), ("sppo", ["algo.pairs=best_worst"]), ("dpa", []),
    ("gpo", ["scorer.kind=multi_objective"]), (None, ["scorer.kind=bt"])])
def test_validation_writes_nothing(preset, overrides):
    """The algorithm's and the scorer kind's defaults are interpolations: the loaded config is the merged
    schema, preset and overrides, untouched by validation."""
    merged = OmegaConf.structured(Config)
    if preset is not None:
        merged = OmegaConf.merge(merged, OmegaConf.load(CONFIG_DIR / f"{preset}.yaml"))
    for item in overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
    cfg = load_config(([preset] if preset else []) + overrides)
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(merged)


def test_algorithm_defaults_fit_the_registry():
    """The schema's defaults are each unit's config: exactly the keys it owns, a pair strategy and a reference it
    accepts; ``algo=NAME`` reads them, and every other unit's key is unset."""
    from selfplay.algorithms.registry import ALGORITHMS, HYPERPARAMETERS

    assert set(ALGORITHM_DEFAULTS) == set(ALGORITHMS)
    assert {"gpo", "sppo", "dpo", "ipo", "simpo", "dpa"} <= set(ALGORITHMS)
    for name, algo in ALGORITHMS.items():
        defaults = ALGORITHM_DEFAULTS[name]
        assert set(defaults) & set(HYPERPARAMETERS) == set(algo.params), name
        assert defaults["pairs"] in algo.pairs, name
        assert defaults.get("reference") in (algo.references or (None,)), name
        assert algo.reference_free == ("reference" not in defaults), name
        cfg = load_config([f"algo={name}"] + (["scorer.kind=multi_objective"] if algo.needs_directions else []))
        assert {k: cfg.algo[k] for k in defaults} == defaults
        assert all(cfg.algo[k] is None for k in HYPERPARAMETERS if k not in defaults)


def test_the_schema_keeps_the_algo_keys_of_before():
    """The composed ``algo`` section offers every key it did when it was written by hand, with the same defaults."""
    algo = OmegaConf.to_container(load_config([]).algo, resolve=True)
    assert {"name": "gpo", "beta": 2.0, "eta": None, "hard": None, "tau": None, "length_normalize": None,
            "gamma": None, "pairs": "all", "max_pairs": 4, "min_prob": 0.0, "reference": "previous",
            "replay": None, "init": None}.items() <= algo.items()
    assert algo["lpc"] == {"codes": 0, "lam": 0.05, "mlp_hidden": None, "init_std": 1.0, "lr": None,
                           "gumbel_tau": 1.0, "g_over": "iteration", "inference": "mean"}


def test_default_preset_equals_defaults():
    """configs/default.yaml only restates algo.name=gpo, so it loads to the schema defaults."""
    assert OmegaConf.to_container(load_config(["default"])) == OmegaConf.to_container(load_config([]))


def test_smoke_preset_loads():
    cfg = load_config(["smoke"])
    assert cfg.iter == 1
    assert cfg.data.prompts_per_iter == 32
    assert cfg.data.eval_size == 16
    assert cfg.eval.prompts == 16 and cfg.eval.samples == 1
    assert cfg.train.epochs == 1
    assert cfg.train.batch_size == 32 and cfg.train.micro_batch_size == 32
    # keys the preset does not set keep their defaults
    assert cfg.generator.k == 4


def test_override_applies_and_beats_preset():
    assert load_config(["generator.k=8"]).generator.k == 8
    cfg = load_config(["smoke", "iter=2", "generator.k=3", "algo.beta=0.5", "run.dir=/tmp/x"])
    assert cfg.iter == 2  # overrides the preset's iter: 1
    assert cfg.generator.k == 3
    assert cfg.algo.beta == 0.5
    assert cfg.run.dir == "/tmp/x"
    assert cfg.data.prompts_per_iter == 32  # from the preset


def test_override_types_converted():
    cfg = load_config(["run.resume=true", "generator.temperature=0", "policy.model=/some/dir"])
    assert cfg.run.resume is True
    assert cfg.generator.temperature == 0.0 and isinstance(cfg.generator.temperature, float)
    assert cfg.policy.model == "/some/dir"


def test_unknown_nested_key_suggests_closest():
    with pytest.raises(ConfigError) as e:
        load_config(["generator.kk=3"])
    msg = str(e.value)
    assert "'generator.kk'" in msg
    assert "did you mean 'generator.k'?" in msg


def test_unknown_top_level_key_suggests_iter():
    with pytest.raises(ConfigError) as e:
        load_config(["iters=3"])
    assert "'iters'" in str(e.value)
    assert "did you mean 'iter'?" in str(e.value)


def test_unknown_key_after_preset():
    with pytest.raises(ConfigError, match=r"unknown config key 'run\.dri'.*did you mean 'run\.dir'"):
        load_config(["smoke", "run.dri=x"])


@pytest.mark.parametrize("arg,key", [("generator.k=abc", "generator.k"), ("generator.k=2.5", "generator.k"),
                                     ("run.resume=maybe", "run.resume"), ("scorer.tau=fast", "scorer.tau"),
                                     ("run.stream=sometimes", "run.stream")])
def test_wrong_type_names_key(arg, key):
    with pytest.raises(ConfigError) as e:
        load_config([arg])
    assert f"bad value for '{key}'" in str(e.value)


def test_an_override_yaml_cannot_parse_is_one_line():
    """OmegaConf lets YAML's own parse errors through: a literal '...' value is still one ConfigError line."""
    with pytest.raises(ConfigError, match=r"^cannot parse override 'policy\.model=\.\.\.': ") as e:
        load_config(["policy.model=..."])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "arg,needle",
    [
        ("generator.k=1", "generator.k must be >= 2"),
        ("iter=0", "iter must be >= 1, got 0"),
        ("generator.backend=foo", "generator.backend must be one of"),
        ("scorer.tau=0", "scorer.tau must be > 0"),
        ("algo.beta=-1", "algo.beta must be > 0"),
        ("algo.name=ppo", "algo.name must be one of ('dpa', 'dpo', 'gpo', 'ipo', "),  # every unit, by module name
        ("generator.temperature=-0.5", "generator.temperature must be >= 0"),
        ("placement.sleep_level=3", "placement.sleep_level must be 1 or 2, got 3"),
        ("log.report_share=0", "log.report_share is a share of the wall time, in (0, 1], got 0.0"),
        ("placement.colocate=true", "placement.colocate=true with generator.backend=vllm needs GPUs"),
        ("scorer.kind=pairrm", "scorer.kind=pairrm needs scorer.model"),
        ("scorer.source=raw", "scorer.source must be one of ('template', 'last_turn'), got 'raw'"),
        ("scorer.source=last_turn", "scorer.source applies to scorer.kind=pairrm only, not gpm"),
        ("scorer.aggregate=mean", "scorer.aggregate must be one of ('none', 'sppo'), got 'mean'"),
        ("scorer.kind=multi_objective scorer.aggregate=sppo", "scorer.aggregate=sppo aggregates a K x K matrix"),
    ],
)
def test_validation_errors(arg, needle):
    with pytest.raises(ConfigError) as e:
        load_config(arg.split(" "))
    assert needle in str(e.value)


def test_batch_size_must_be_multiple_of_micro_batch():
    with pytest.raises(ConfigError, match=r"train.batch_size \(10\) must be a multiple of train.micro_batch_size \(4\)"):
        load_config(["train.batch_size=10", "train.micro_batch_size=4"])
    assert load_config(["train.batch_size=12", "train.micro_batch_size=4"]).train.batch_size == 12


def test_unknown_preset():
    with pytest.raises(ConfigError) as e:
        load_config(["nope"])
    assert "unknown preset 'nope'" in str(e.value)
    assert "default" in str(e.value) and "smoke" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'smoke'"):
        load_config(["smok"])


def test_two_presets_refused():
    with pytest.raises(ConfigError, match="unexpected argument 'default'"):
        load_config(["smoke", "default"])


def test_presets_listing_matches_files():
    names = presets()
    assert set(names) == {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert {"default", "smoke"} <= set(names)
    assert names["smoke"].startswith("python -m selfplay.run smoke")


def test_help_text_lists_presets_and_keys():
    text = help_text()
    assert text.startswith("usage: python -m selfplay.run")
    for name in presets():
        assert f"  {name} " in text
    for line in ["  generator.k=4", "  iter=3", "  scorer.tau=0.1  (by scorer.kind: gpm 0.1, multi_objective 10.0, armorm 0.1)", "  algo.name=gpo",
                 "  dpa    replay=0.15 init=sft pairs=best_of_n (best_of_n) reference=none",
                 "  gpo    beta=2.0 pairs=all (all|best_worst) reference=previous (previous)",
                 "  simpo  beta=2.0 gamma=1.0 pairs=best_worst (best_worst|best_random|all_pairs) reference=none",
                     "  ipo    tau=0.5 length_normalize=True pairs=best_worst (best_worst|best_random|all_pairs) "
                     "reference=initial (initial|previous)"]:
        assert line + "\n" in text


def test_to_yaml_round_trips():
    cfg = load_config(["smoke", "generator.k=6"])
    back = OmegaConf.create(to_yaml(cfg))
    assert back.generator.k == 6 and back.iter == 1
    assert OmegaConf.to_container(back) == OmegaConf.to_container(cfg, resolve=True)


def test_overriding_a_section_with_a_value_names_the_section() -> None:
    with pytest.raises(ConfigError, match=r"bad value for 'generator' \(from command line 'generator=3'\)"):
        load_config(["generator=3"])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["simpo", "algo.reference=initial"], "simpo uses no reference model; remove algo.reference=initial"),
        (["algo=sppo", "algo.pairs=all_pairs"],
         "algo.pairs='all_pairs' is not a pair strategy of sppo; it takes ('all', 'best_worst')"),
        (["dpo", "algo.pairs=all"], "algo.pairs='all' is not a pair strategy of dpo"),
        (["dpo", "algo.pairs=best_random", "generator.k=1"], "generator.k must be >= 2"),
        (["dpo", "algo.min_prob=1.5"], "no pair could pass the margin filter"),
        (["gpo", "algo.min_prob=0.6"], "algo.min_prob filters preference pairs; gpo trains"),
        (["algo=dpo", "algo.eta=3"], "algo.eta applies to sppo, not to algo.name=dpo"),
        (["algo=gpo", "algo.reference=initial"], "algo.reference='initial' is not available to gpo"),
        (["algo=sppo", "algo.hard=true"], "algo.hard=true is SPPO's pair recipe"),
        (["ipo", "algo.tau=0"], "algo.tau must be > 0"),
        (["dpo", "algo.max_pairs=0"], "algo.max_pairs must be >= 1"),
        (["train.lr_schedule=step"], "train.lr_schedule must be one of ('constant', 'linear', 'cosine')"),
        (["train.warmup_ratio=1.0"], "train.warmup_ratio must lie in [0, 1)"),
        (["train.world_size=0"], "train.world_size must be >= 1, got 0"),
        (["train.world_size=3"], "train.batch_size (64) must be a multiple of train.world_size (3)"),
        (["train.world_size=2", "train.mixed_precision=fp16"], "train.mixed_precision=fp16 needs train.world_size=1"),
        (["generator.dtype=fp8"], "generator.dtype must be one of ('float32', 'bfloat16', 'float16'), got 'fp8'"),
    ],
)
def test_bad_algorithm_configurations_fail_before_any_work(args, needle):
    with pytest.raises(ConfigError) as e:
        load_config(args)
    assert needle in str(e.value)


@pytest.mark.parametrize("name", ["gpo", "sppo", "dpo", "ipo", "simpo"])
def test_algorithm_presets_and_shorthand_agree(name):
    """`python -m selfplay.run NAME` and `algo=NAME` both select the algorithm; presets state its settings."""
    preset, shorthand = load_config([name]), load_config([f"algo={name}"])
    assert preset.algo.name == shorthand.algo.name == name
    assert preset.algo.pairs is not None and shorthand.algo.pairs is not None
    assert (preset.algo.reference is None) == (name == "simpo")
