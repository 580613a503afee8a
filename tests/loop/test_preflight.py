"""Bad models and run directories are found by the driver before Ray starts (issue 17): one line, exit code 2."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from tests.loop.test_e2e import assert_refused


@pytest.fixture
def no_ray(monkeypatch):
    """The run must refuse before any actor gets a model: Ray's start and the actors' processes, which begin
    beside the checks (``selfplay.loop.startup``), fail here, and so does ``start_workers``, so a run that
    does not refuse fails the test (the suite's own cluster may be up already)."""
    import ray

    import selfplay.run
    from selfplay.loop.startup import Processes

    def started(*args, **kwargs):
        raise AssertionError("the run went on to start Ray or its actors before refusing")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(Processes, "start", started)
    monkeypatch.setattr(selfplay.run, "start_workers", started)


def tiny_llama(path, vocab_size: int, pickled: bool = False) -> str:
    """A random 1-layer Llama directory; ``pickled``: its weights in pytorch_model.bin (torch.save), as older
    checkpoints ship them, and no safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1))
    if pickled:
        path.mkdir()
        model.config.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    else:
        model.save_pretrained(path)
    return str(path)


def test_a_tokenizer_with_more_tokens_than_the_policys_embedding_is_refused(world, tmp_path, capsys, no_ray):
    """The issue's case: a 300-token model with the world's 1024-token tokenizer (826 tokens in use)."""
    policy = tiny_llama(tmp_path / "small_vocab", 300)
    capsys.readouterr()  # save_pretrained's progress bar
    err = assert_refused([f"policy.model={policy}", f"policy.tokenizer={world.tokenizer}", f"scorer.model={world.gpm}"],
                         f"policy model '{policy}' embeds 300 tokens but its tokenizer", tmp_path, capsys)
    assert len(err.strip().splitlines()) == 1 and "has 826" in err


def test_a_scorer_directory_without_weights_is_refused(world, tmp_path, capsys, no_ray):
    scorer = tmp_path / "gpm"
    shutil.copytree(world.gpm, scorer, ignore=shutil.ignore_patterns("*.safetensors"))
    assert_refused([f"policy.model={world.policy}", f"scorer.model={scorer}"],
                   f"scorer model '{scorer}' has no weights: no *.safetensors file", tmp_path, capsys)


def test_pickle_only_weights_are_refused_not_unpickled(world, tmp_path, capsys, no_ray):
    policy = tiny_llama(tmp_path / "pickled", 1024, pickled=True)
    err = assert_refused([f"policy.model={policy}", f"policy.tokenizer={world.tokenizer}", f"scorer.model={world.gpm}"],
                         "has only pickle weights (pytorch_model.bin); selfplay loads safetensors only", tmp_path, capsys)
    assert "set policy.allow_pickle=true to load them" in err


def pickled_scorer(world, path) -> str:
    """The world's GPM with its weights in pytorch_model.bin (torch.save) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(world.gpm, path, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(str(next(Path(world.gpm).glob("*.safetensors")))), path / "pytorch_model.bin")
    return str(path)


def with_own_code(source: str, path, auto_class: str, body: str = "") -> str:
    """A copy of the model directory ``source`` whose config.json maps ``auto_class`` to its own modeling file
    (by default a plain Llama subclass; ``body``: the file's text instead)."""
    import json

    shutil.copytree(source, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "auto_map": {auto_class: "modeling_mine.Mine"}}))
    base = "LlamaForCausalLM" if auto_class == "AutoModelForCausalLM" else "LlamaModel"
    (path / "modeling_mine.py").write_text(body or f"from transformers import {base}\n\n\nclass Mine({base}):\n"
                                                   "    pass\n")
    return str(path)


def test_a_pickle_only_scorer_is_refused_naming_its_key(world, tmp_path, capsys, no_ray):
    scorer = pickled_scorer(world, tmp_path / "gpm")
    assert_refused([f"policy.model={world.policy}", f"scorer.model={scorer}"],
                   f"scorer model '{scorer}' has only pickle weights (pytorch_model.bin); selfplay loads safetensors "
                   "only (unpickling runs code): convert them with transformers' save_pretrained, or set "
                   "scorer.allow_pickle=true to load them", tmp_path, capsys)


def test_a_model_with_its_own_code_is_refused_not_run(world, tmp_path, capsys, no_ray):
    policy = with_own_code(world.policy, tmp_path / "custom", "AutoModelForCausalLM",
                           "raise SystemExit('remote code ran')\n")
    assert_refused([f"policy.model={policy}", f"scorer.model={world.gpm}"],
                   "ships its own Python code (auto_map: AutoModelForCausalLM); selfplay does not run a model's code "
                   "unless asked: set policy.trust_remote_code=true if you trust it", tmp_path, capsys)


def test_a_scorer_with_its_own_code_is_refused_naming_its_key(world, tmp_path, capsys, no_ray):
    scorer = with_own_code(world.gpm, tmp_path / "custom", "AutoModel", "raise SystemExit('remote code ran')\n")
    assert_refused([f"policy.model={world.policy}", f"scorer.model={scorer}"],
                   f"scorer model '{scorer}' ships its own Python code (auto_map: AutoModel); selfplay does not run a "
                   "model's code unless asked: set scorer.trust_remote_code=true if you trust it", tmp_path, capsys)


@pytest.mark.parametrize("role", ["policy", "scorer"])
@pytest.mark.parametrize("flag", ["allow_pickle", "trust_remote_code"])
def test_a_model_opted_in_passes_the_checks(world, tmp_path, capsys, no_ray, role, flag):
    """With its key set, the model the run refused above goes through to starting Ray (the fixture stops it)."""
    if flag == "allow_pickle":
        model = (tiny_llama(tmp_path / "pickled", 1024, pickled=True) if role == "policy" else
                 pickled_scorer(world, tmp_path / "gpm"))
    else:
        model = with_own_code(world.policy if role == "policy" else world.gpm, tmp_path / "custom",
                              "AutoModelForCausalLM" if role == "policy" else "AutoModel")
    models = {"policy": world.policy, "scorer": world.gpm, role: model}
    from selfplay.run import main

    with pytest.raises(AssertionError, match="went on to start Ray"):
        main(["smoke", "run.progress=false", f"run.dir={tmp_path / 'run'}", f"policy.model={models['policy']}",
              f"policy.tokenizer={world.tokenizer}", f"scorer.model={models['scorer']}", f"{role}.{flag}=true"])
    assert "error" not in capsys.readouterr().err


def test_a_run_dir_that_cannot_be_written_is_refused_before_any_work(world, tmp_path, capsys, monkeypatch, no_ray):
    from selfplay.run import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["smoke", f"run.dir={blocker / 'run'}"]) == 2
    assert f"run.dir {blocker / 'run'} is not writable" in capsys.readouterr().err

    import selfplay.loop.preflight as preflight

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(preflight.tempfile, "NamedTemporaryFile", read_only)
    assert main(["smoke", f"run.dir={tmp_path / 'ro'}"]) == 2
    assert "is not writable (read-only file system); choose another run.dir" in capsys.readouterr().err
    assert not (tmp_path / "ro" / "config.yaml").exists()


def test_a_hub_name_is_left_to_the_loaders():
    """No local directory: nothing to list, the loaders download (or name the missing model) later."""
    from selfplay.loop.preflight import check_code, check_vocabulary, check_weights

    check_weights("some-org/some-model", "policy", False)
    check_code("some-org/some-model", "policy", False)
    check_vocabulary("some-org/some-model", "some-org/some-model", "policy model", False)


def test_allowed_pickle_weights_under_a_name_no_loader_reads_are_refused(world, tmp_path):
    """``allow_pickle`` lets through what the loaders read (``pytorch_model*.bin``); a bare ``model.pt`` would
    pass to the actors and fail there with no weights, so it is refused here, naming the names read."""
    from selfplay.core.lm import ModelLoadError
    from selfplay.loop.preflight import check_weights

    path = Path(tiny_llama(tmp_path / "pickled", 64, pickled=True))
    check_weights(str(path), "policy", allow_pickle=True)
    (path / "pytorch_model.bin").rename(path / "model.pt")
    with pytest.raises(ModelLoadError, match=r"has pickle weights \(model\.pt\) but none the loaders read: with "
                                             r"policy\.allow_pickle they read pytorch_model\*\.bin"):
        check_weights(str(path), "policy", allow_pickle=True)


def armorm(tmp_path, extra_auto_map: dict | None = None) -> str:
    """The tiny ArmoRM of tests/models/test_armorm.py (the hub's layout and config.json, auto_map included)."""
    import json

    from tests.models.test_armorm import armorm_checkpoint

    path = armorm_checkpoint(tmp_path / "ArmoRM")
    if extra_auto_map:
        config = json.loads((Path(path) / "config.json").read_text())
        config["auto_map"].update(extra_auto_map)
        (Path(path) / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("trusted", [False, True])
def test_armorm_asked_as_multi_objective_is_refused_naming_its_heads(world, tmp_path, capsys, no_ray, trusted):
    """The issue's two failures (a direction error over LABEL_0; with trust_remote_code, the actor dying on
    score.weight) become one line before Ray, from the safetensors header: what it holds and which kind reads it."""
    scorer = armorm(tmp_path)
    err = assert_refused(["algo.name=dpa", f"policy.model={world.policy}", f"scorer.model={scorer}", "scorer.kind=multi_objective",
                          f"scorer.trust_remote_code={str(trusted).lower()}"],
                         f"scorer model '{scorer}' has no score.weight: not a 'multi_objective' checkpoint (besides "
                         "the backbone's model.* / pretrained_model.* it holds gating.layers.0.bias [24], gating.layers.0.weight [24, 32]",
                         tmp_path, capsys)
    assert "regression_layer.weight [19, 32], reward_transform_matrix [19, 19]); scorer.kind=armorm reads this layout" in err
    assert len(err.strip().splitlines()) == 1


def test_armorm_with_its_auto_map_passes_the_checks_when_read_natively(world, tmp_path, capsys, no_ray):
    """ArmoRM's config.json maps AutoModelForSequenceClassification to its modeling_custom.py; no loader of the scorer
    resolves that class (the backbone is built from model_type, the heads read from the safetensors), so the run
    goes on to start Ray without scorer.trust_remote_code, and its file is never imported (it would exit)."""
    from selfplay.run import main

    scorer = armorm(tmp_path)
    with pytest.raises(AssertionError, match="went on to start Ray"):
        main(["dpa", "run.progress=false", f"run.dir={tmp_path / 'run'}", f"policy.model={world.policy}",
              f"policy.tokenizer={world.tokenizer}", f"scorer.model={scorer}", "scorer.kind=armorm"])
    assert "error" not in capsys.readouterr().err


def test_the_code_check_comes_before_the_direction_check(world, tmp_path, capsys, no_ray):
    """A scorer whose config maps AutoModel (which the loaders do resolve) to its own code, with a direction of the
    wrong length: the code is what the run names."""
    scorer = armorm(tmp_path, {"AutoModel": "modeling_custom.LlamaForRewardModelWithGating"})
    assert_refused(["algo.name=dpa", f"policy.model={world.policy}", f"scorer.model={scorer}", "scorer.kind=armorm",
                    "directions.fixed=[1.0,0.0,0.0]"],
                   f"scorer model '{scorer}' ships its own Python code (auto_map: AutoModel); selfplay does not run",
                   tmp_path, capsys)


def test_every_shard_of_a_sharded_checkpoint_is_read_from_its_header(tmp_path):
    """The heads may sit in any shard model.safetensors.index.json lists; only the headers are read."""
    import json

    from safetensors.torch import load_file, save_file

    from selfplay.core.lm import ModelLoadError
    from selfplay.loop.preflight import check_heads
    from selfplay.models.backbone import checkpoint_tensors

    path = Path(armorm(tmp_path))
    state = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    backbone = {n: t for n, t in state.items() if n.startswith("model.")}
    heads = {n: t for n, t in state.items() if not n.startswith("model.")}
    shards = {"model-00001-of-00002.safetensors": backbone, "model-00002-of-00002.safetensors": heads}
    for shard, tensors in shards.items():
        save_file(tensors, str(path / shard))
    weight_map = {n: shard for shard, tensors in shards.items() for n in tensors}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert checkpoint_tensors(path) == {n: list(t.shape) for n, t in state.items()}
    check_heads(str(path), "armorm")
    with pytest.raises(ModelLoadError, match=r"has no value_head.weight: not a 'gpm' checkpoint .*armorm reads"):
        check_heads(str(path), "gpm")
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="lists model-00002-of-00002.safetensors, which is not there"):
        check_heads(str(path), "armorm")


def test_a_start_that_fails_leaves_a_directory_the_same_command_starts_again_in(world, tmp_path, capsys,
                                                                                 monkeypatch):
    """An actor that will not start (here: start_workers raising as a dying scorer would) leaves no config.yaml,
    so the same command, once the cause is gone, starts rather than saying the directory already holds a run."""
    import selfplay.run
    from selfplay.loop.startup import Processes

    def dies(*args, **kwargs):
        raise RuntimeError("the scorer actor died")

    def started(*args, **kwargs):
        raise AssertionError("started")

    run_dir = tmp_path / "run"
    argv = ["smoke", "run.progress=false", f"run.dir={run_dir}", f"policy.model={world.policy}",
            f"policy.tokenizer={world.tokenizer}", f"scorer.model={world.gpm}"]
    monkeypatch.setattr("ray.init", lambda *a, **k: None)
    monkeypatch.setattr("ray.shutdown", lambda *a, **k: None)
    monkeypatch.setattr(Processes, "start", lambda cfg: None)
    monkeypatch.setattr(selfplay.run, "start_workers", dies)
    with pytest.raises(RuntimeError, match="the scorer actor died"):
        selfplay.run.main(argv)
    assert run_dir.is_dir() and not (run_dir / "config.yaml").exists()
    monkeypatch.setattr(selfplay.run, "start_workers", started)
    with pytest.raises(AssertionError, match="started"):
        selfplay.run.main(argv)
    assert "already holds a run" not in capsys.readouterr().err


@pytest.mark.parametrize("tp,needle", [
    (3, "generator.tensor_parallel=3 does not divide the policy's 2 attention heads"),
    (2, "generator.tensor_parallel=2 on the CPU needs a core per worker; this machine has 1")])
def test_a_tensor_parallel_size_the_policy_or_the_machine_cannot_take_is_refused(world, tmp_path, capsys, no_ray,
                                                                                 monkeypatch, tp, needle):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    err = assert_refused([f"generator.tensor_parallel={tp}"], f"policy model '{world.policy}': {needle}", tmp_path,
                         capsys)
    assert len(err.strip().splitlines()) == 1
