"""Session-wide fixtures: one embedded world and one Ray cluster for the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RAY_FIXTURES = {"ray_cluster"}  # every fixture that starts actors (hf_run, ...) asks for it


BACKGROUND: list[subprocess.Popen] = []  # the world-parts build (tests/world_parts.py), if one was started


def pytest_collection_finish(session: pytest.Session) -> None:
    """A session that will run a test marked ``world_parts`` builds those parts in the background from now on.
    (At the lowest CPU priority the DPA test waited 265 s for them and the suite took longer: docs/benchmarks.md.)"""
    if not session.config.option.collectonly and any(i.get_closest_marker("world_parts") for i in session.items):
        root = Path(__file__).resolve().parent.parent  # a part that fails here is built again, loudly, by its test
        BACKGROUND.append(subprocess.Popen([sys.executable, "-m", "tests.world_parts"], cwd=root,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for build in BACKGROUND:  # done by now where its tests ran; a session stopped early does not wait long
        try:
            build.wait(timeout=30)
        except subprocess.TimeoutExpired:
            build.kill()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``e2e`` on every test that asks, directly or through its fixtures, for the session's Ray cluster."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def no_ray_outside_e2e(request, monkeypatch):
    """A test not marked ``e2e`` that would start Ray fails at once, naming the marker: the fast tier
    (``-m "not gpu and not e2e"``) stays free of actor start-ups."""
    if request.node.get_closest_marker("e2e") is None:
        import ray

        from selfplay.loop.startup import Processes

        def refuse(*args, **kwargs):
            raise RuntimeError(f"{request.node.nodeid} starts Ray: give it the ray_cluster fixture or mark it e2e")

        monkeypatch.setattr(ray, "init", refuse)
        monkeypatch.setattr(Processes, "start", refuse)  # the session's cluster may be up: no actor either
    yield


@pytest.fixture(scope="session")
def world():
    """The default embedded world (built once per machine, then cached)."""
    from omegaconf import OmegaConf

    from selfplay.config.schema import WorldConfig
    from selfplay.world.build import get_world

    return get_world(OmegaConf.structured(WorldConfig))


@pytest.fixture(scope="session")
def tiny_policy(world, tmp_path_factory):
    """A random tiny Llama over the world's tokenizer, saved as a Hugging Face directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfplay.core.lm import load_tokenizer

    tok = load_tokenizer(world.tokenizer)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1))
    path = tmp_path_factory.mktemp("tiny") / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    # address="local": always a fresh cluster, never a developer's running head
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def hf_run(world, ray_cluster, tmp_path_factory):
    """Two uninterrupted iterations of the smoke preset with the HF backend: the reference for determinism
    and resume (tests/loop/).  Beside it, ``stage_entries.json``: what the run directory held of iteration 2 as
    each stage began, i.e. what a driver killed there leaves (tests/loop/test_resume.py)."""
    from selfplay.run import main
    from tests.loop.run_state import recording_stage_entries

    run_dir = tmp_path_factory.mktemp("hf") / "run"
    with recording_stage_entries(run_dir, 2, run_dir.parent / "stage_entries.json"):
        assert main(["smoke", "run.progress=false", "iter=2", f"run.dir={run_dir}", "generator.backend=hf"]) == 0
    return run_dir
