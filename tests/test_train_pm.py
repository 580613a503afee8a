"""The preference-model entry points end to end on the embedded world's backbone: train_pm, then eval_pm."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfplay import eval_pm, train_pm
from selfplay.config.loading import load_config
from selfplay.config.pm import PM_PRESET_DIR, EvalPMConfig, TrainPMConfig, check_eval, check_train

BATCH = 16


def subset_of(row: dict) -> str:
    return "short" if len(row["prompt"]) < 40 else "long"


def sample_pairs(world, name: str, n: int, out: Path) -> str:
    """The first ``n`` of the world's labelled pairs ``name``, with a subset column."""
    lines = (Path(world.pairs) / name).read_text().splitlines()[:n]
    rows = [{**json.loads(line), "subset": subset_of(json.loads(line))} for line in lines]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(out)


@pytest.fixture(scope="module")
def data(world, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pairs")
    return {"train": sample_pairs(world, "train.jsonl", 200, root / "train.jsonl"),
            "test": sample_pairs(world, "test.jsonl", 60, root / "test.jsonl"),
            "small": sample_pairs(world, "test.jsonl", 20, root / "small.jsonl")}


@pytest.fixture(scope="module")
def trained(world, data, tmp_path_factory) -> Path:
    """A BT model trained by train_pm for 20 steps on 200 pairs, held out: 60 pairs of another file."""
    out = tmp_path_factory.mktemp("runs") / "bt"
    code = train_pm.main([
        "kind=bt", f"model={world.policy}", f"data.path={data['train']}", f"data.eval_path={data['test']}",
        "train.steps=20", f"train.batch_size={BATCH}", "train.device=cpu", f"out={out}",
    ])
    assert code == 0
    return out


def test_train_pm_writes_checkpoint_config_and_report(trained: Path, data) -> None:
    from selfplay.models.preference_scorer import load_scorer

    assert {"model.safetensors", "config.json", "train_config.yaml", "eval_report.json"} <= {
        p.name for p in trained.iterdir()}
    assert not [p for p in trained.parent.iterdir() if ".tmp-" in p.name]
    report = json.loads((trained / "eval_report.json").read_text())
    assert (report["kind"], report["n_train"], report["n_eval"], report["steps"]) == ("bt", 200, 60, 20)
    assert report["bad_rows"]["train"] == {"count": 0, "rows": []}
    # Whether it learned is read from accuracy, not from the loss: each step's loss is one batch of 16 pairs,
    # and over train.seed 0-3 here the last step's loss was above the first's on seed 0 (0.708 vs 0.635; the
    # last five steps' mean too: 0.632 vs 0.561), while train accuracy rose to 0.855.
    assert math.isfinite(report["loss_first"]) and math.isfinite(report["loss_last"])
    held_out = report["held_out"]
    assert held_out["pairs"] == 60 and set(held_out["subsets"]) == {"short", "long"}
    assert sum(s["pairs"] for s in held_out["subsets"].values()) == 60
    # Over six 200-pair slices of the world's pairs with train.seed 0-5, 20 steps gave train accuracy 0.675-0.870
    # (this instance: 0.870) on this machine kind: 0.6 leaves room for other CPUs.
    assert report["train"]["pairs"] == 200 and report["train"]["accuracy"] > 0.6
    saved = OmegaConf.load(trained / "train_config.yaml")
    assert (saved.kind, saved.train.steps, saved.data.eval_path) == ("bt", 20, data["test"])
    scorer = load_scorer("bt", str(trained), BATCH)
    assert scorer.kind == "bt"


def test_eval_pm_reproduces_held_out_accuracy(trained: Path, data, tmp_path: Path, capsys) -> None:
    out = tmp_path / "reports" / "bt.json"
    code = eval_pm.main(["scorer.kind=bt", f"scorer.model={trained}", f"scorer.batch_size={BATCH}",
                         "scorer.device=cpu", f"data.path={data['test']}", f"out={out}"])
    assert code == 0
    report = json.loads(out.read_text())
    trained_report = json.loads((trained / "eval_report.json").read_text())["held_out"]
    assert report["accuracy"] == pytest.approx(trained_report["accuracy"])
    assert report["subsets"] == trained_report["subsets"]
    assert (report["kind"], report["pairs"], report["bad_rows"]["count"]) == ("bt", 60, 0)
    printed = capsys.readouterr().out
    assert "overall" in printed and "short" in printed and "long" in printed


def test_eval_pm_refuses_a_checkpoint_of_another_kind(trained: Path, data, capsys) -> None:
    code = eval_pm.main(["scorer.kind=gpm", f"scorer.model={trained}", f"data.path={data['test']}"])
    assert code == 2
    assert "set scorer.kind=bt" in capsys.readouterr().err


@pytest.mark.parametrize(("kind", "extra"), [("gpm", []), ("gpm", ["head_init=difference"]), ("pairwise", [])])
def test_other_kinds_with_eval_share(kind: str, extra: list[str], world, data, tmp_path: Path) -> None:
    out = tmp_path / kind
    code = train_pm.main([kind, f"model={world.policy}", f"data.path={data['small']}", "data.eval_share=0.25",
                          "train.steps=2", "train.batch_size=8", "train.device=cpu", f"out={out}", *extra])
    assert code == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert (report["kind"], report["n_train"], report["n_eval"]) == (kind, 15, 5)
    code = eval_pm.main([f"scorer.kind={kind}", f"scorer.model={out}", f"out={tmp_path / 'r.json'}",
                         "scorer.batch_size=8", "scorer.device=cpu", f"data.path={data['small']}"])
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["pairs"] == 20


def test_refuses_an_existing_out_dir(tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert train_pm.main(["kind=bt", f"out={out}"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_too_many_bad_rows_writes_nothing(world, tmp_path: Path, capsys) -> None:
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(8)]
    rows += [{"prompt": "q", "chosen": "same", "rejected": "same"}, {"prompt": "q", "chosen": "a"}]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert train_pm.main(["kind=bt", f"model={world.policy}", f"data.path={path}", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert "2 of 10 rows" in err and "data.max_bad_share" in err and "row 9: no column 'rejected'" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]


@pytest.mark.parametrize(("args", "expected"), [
    (["kind=svm"], "kind must be one of"),
    (["trian.steps=3"], "unknown config key 'trian'"),
    (["train.stesp=3"], "did you mean 'train.steps'"),
    (["train.steps=0"], "train.steps must be >= 1"),
    (["data.eval_share=1.0"], "data.eval_share must be in [0, 1)"),
    (["data.max_bad_share=2"], "data.max_bad_share must be in [0, 1]"),
    (["train.lr=0"], "train.lr must be > 0"),
    (["train.warmup_ratio=1"], "train.warmup_ratio must lie in [0, 1), got 1.0"),
    (["train.lr_schedule=step"], "train.lr_schedule must be one of ('constant', 'linear', 'cosine'), got 'step'"),
    (["head_init=zeros"], "head_init must be one of ('random', 'difference'), got 'zeros'"),
    (["kind=bt", "head_init=difference"], "head_init applies to kind=gpm only"),
    (["kind=pairrm"], "kind=pairrm is a published checkpoint read as it is, not trained here"),
    (["train.batch_size=0"], "train.batch_size must be >= 1"),
    (["train.device=toaster"], "train.device must be"),
    (["nopreset"], "unknown preset 'nopreset'"),
])
def test_train_pm_config_errors(args: list[str], expected: str, capsys) -> None:
    assert train_pm.main(args) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(("args", "expected"), [
    ([], "scorer.model is required"),
    (["scorer.model=x", "scorer.kind=rm"], "scorer.kind must be one of"),
    (["scorer.model=x", "scorer.kind=bt", "scorer.k=2"], "scorer.k applies to scorer.kind=gpm only"),
    (["scorer.model=x", "kind=bt"], "unknown config key 'kind'"),
    (["scorer.model=x", "scorer.dtype=fp8"], "scorer.dtype must be one of"),
])
def test_eval_pm_config_errors(args: list[str], expected: str, capsys) -> None:
    assert eval_pm.main(args) == 2
    assert expected in capsys.readouterr().err


def test_help_lists_presets(capsys) -> None:
    assert train_pm.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "gpm" in text and "pairwise" in text and "train.steps=None" in text and "rewardbench" not in text
    assert eval_pm.main(["--help"]) == 0
    assert "rewardbench" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted(PM_PRESET_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_load(path: Path) -> None:
    command = path.read_text().splitlines()[0]
    assert command.startswith("# python -m selfplay.")
    if "selfplay.train_pm" in command:
        cfg = load_config([path.stem], schema_class=TrainPMConfig, preset_dir=PM_PRESET_DIR, check=check_train)
        assert path.stem in cfg.out
    else:
        cfg = load_config([path.stem, "scorer.model=x"], schema_class=EvalPMConfig, preset_dir=PM_PRESET_DIR,
                          check=check_eval)
        assert cfg.data.path is not None


def test_world_defaults(world) -> None:
    cfg = load_config(["bt"], schema_class=TrainPMConfig, preset_dir=PM_PRESET_DIR, check=check_train)
    cfg = train_pm.resolve_sources(cfg)
    assert (cfg.model, cfg.tokenizer) == (world.policy, world.policy)
    assert cfg.data.path == str(Path(world.pairs) / "train.jsonl")
    assert cfg.data.eval_path == str(Path(world.pairs) / "test.jsonl")


def test_eval_pm_reads_pickle_weights_only_with_allow_pickle(trained: Path, data, tmp_path: Path, capsys) -> None:
    """eval_pm takes the run's scorer opt-ins: a pickle-only copy of the checkpoint is refused (never unpickled)
    by default and scores as the safetensors original with scorer.allow_pickle=true."""
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(trained, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    args = ["scorer.kind=bt", f"scorer.model={pickled}", "scorer.device=cpu", f"data.path={data['test']}"]
    assert eval_pm.main(args) != 0
    assert "scorer.allow_pickle=true" in capsys.readouterr().err
    assert eval_pm.main([*args, "scorer.allow_pickle=true", f"out={tmp_path / 'r.json'}"]) == 0
    trained_report = json.loads((trained / "eval_report.json").read_text())["held_out"]
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] == pytest.approx(trained_report["accuracy"])
