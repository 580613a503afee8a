"""The overlapped start (issue 29, ``selfplay.loop.startup``): the checks on a thread beside Ray's start, each
role's process importing only what the role needs, and a refused run leaving no actor behind."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from selfplay.config.loading import load_config
from selfplay.loop.startup import InBackground, role_imports
from tests.loop.test_e2e import assert_refused


def test_in_background_returns_the_value_or_raises_the_error_where_it_is_waited_for():
    slow = InBackground(lambda: time.sleep(0.2) or 7, "seven")
    assert slow.result() == 7 and slow.result() == 7

    def fails():
        raise ValueError("bad row 3")

    failing = InBackground(fails, "fails")
    with pytest.raises(ValueError, match="bad row 3"):
        failing.result()


def imported_after(modules: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after importing ``modules``, and their top-level packages."""
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(' '.join(sys.modules))")
    held = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    return held | {m.split(".")[0] for m in held}


@pytest.mark.parametrize(("role", "extra", "absent"), [
    ("learner", [], {"vllm", "peft"}),
    ("learner", ["train.lora.rank=4"], {"vllm"}),
    ("scorer", [], {"vllm", "peft"})])
def test_each_role_imports_only_what_it_needs(role, extra, absent):
    imports = role_imports(load_config(extra))[role]
    held = imported_after(list(imports))
    assert not held & absent, f"{role} imports {held & absent}"
    assert "transformers" in held and ("peft" in held) == ("train.lora.rank=4" in extra)
    assert "vllm" in role_imports(load_config([]))["generator"][1]
    assert "vllm" not in "".join(role_imports(load_config(["generator.backend=hf"]))["generator"])


def test_the_drivers_imports_and_config_load_no_model_library():
    """The driver checks its inputs on a thread while Ray starts: its own imports must not hold that up."""
    held = imported_after(["selfplay.run", "selfplay.loop.driver", "selfplay.loop.startup"])
    assert not held & {"vllm", "peft", "transformers.modeling_utils", "selfplay.policy.engines",
                       "selfplay.models.backbone"}


def test_a_refused_run_stops_the_actor_processes_started_beside_its_checks(world, ray_cluster, tmp_path, capsys,
                                                                          monkeypatch):
    """The session's Ray is up, so the run starts its actors' processes at once; the checks then refuse the
    scorer: exit code 2, one line, no run directory, and every one of those processes is dead."""
    import ray
    from ray.exceptions import RayActorError

    from selfplay.loop.startup import Processes

    started, real_start = [], Processes.start
    monkeypatch.setattr(Processes, "start", lambda cfg: started.append(real_start(cfg)) or started[-1])
    missing = tmp_path / "no-such-scorer"
    err = assert_refused([f"scorer.model={missing}"], f"cannot read the Hugging Face config of the scorer '{missing}'",
                         tmp_path, capsys)
    assert len(err.strip().splitlines()) == 1
    (processes,) = started
    actors = [*processes.generators, processes.scorer, *processes.learner.ranks]
    assert len(actors) == 3
    for actor in actors:
        with pytest.raises(RayActorError):
            ray.get(actor.__ray_ready__.remote(), timeout=60)
