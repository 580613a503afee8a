"""`launch/local_job.sh`: one short iteration submitted as a Ray job to a Ray head of the script's own."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest
import yaml

from selfplay.config.loading import load_config

pytestmark = pytest.mark.e2e  # starts a Ray cluster of its own, in a subprocess

REPO = Path(__file__).resolve().parents[1]
FAST = ["iter=1", "run.progress=false", "data.prompts_per_iter=16", "data.eval_size=16", "eval.prompts=8",
        "eval.samples=1", "train.epochs=1", "train.batch_size=16", "train.micro_batch_size=16",
        "generator.backend=hf"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def processes_under(temp_dir: str) -> list[psutil.Process]:
    """What is left of a Ray head: its daemons name its temp dir on their command lines."""
    return [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in a for a in p.info["cmdline"] or ())]


def run_script(command: list[str], env: dict[str, str], ray_temp: str) -> str:
    """Run a launch script to its end (10 minutes at most) and its output; then no process of its Ray head
    (those naming ``ray_temp``) may be left."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap stops its head
        out, _ = proc.communicate(timeout=60)
        raise AssertionError(f"{command[1]} timed out:\n{out[-5000:]}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        leftovers = processes_under(ray_temp)
        for p in leftovers:
            try:
                p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert proc.returncode == 0, out[-5000:]
    assert not leftovers, f"the script left its Ray head running: {[p.info['cmdline'][:1] for p in leftovers]}"
    return out


def assert_one_iteration(run_dir: Path) -> None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["iteration"] == 1
    assert 0.0 <= records[0]["win_rate_vs_initial"] <= 1.0


def test_local_job_runs_one_iteration(tmp_path):
    run_dir = tmp_path / "run"
    # The head gets its own temp dir (short: Ray's socket paths must fit in 107 bytes) and dashboard port, so
    # it neither reuses nor disturbs another Ray instance on this machine, such as the suite's `ray.init()`.
    ray_temp = tempfile.mkdtemp(prefix="sp-ray-", dir="/tmp")
    env = {**os.environ, "SELFPLAY_DASHBOARD_PORT": str(free_port()), "SELFPLAY_RAY_TEMP_DIR": ray_temp}
    env.pop("RAY_ADDRESS", None)
    out = run_script(["bash", "launch/local_job.sh", *FAST, f"run.dir={run_dir}"], env, ray_temp)
    assert f"metrics: {run_dir}/metrics.jsonl" in out
    assert_one_iteration(run_dir)


STAND_INS = {
    # `scontrol show hostnames LIST`: one node, this machine
    "scontrol": '#!/usr/bin/env bash\n[[ "$1 $2" == "show hostnames" ]] && echo "$(hostname)"\n',
    # `srun [options] command ...`: the command, here
    "srun": '#!/usr/bin/env bash\nwhile [[ $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done\nexec "$@"\n',
}


def test_slurm_sbatch_runs_one_iteration_with_stand_ins(tmp_path):
    """launch/slurm.sbatch end to end on this machine, with stand-in srun and scontrol: a one-node Ray cluster
    inside the "allocation", a one-iteration job submitted to it, and the cluster stopped at the end."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    run_dir = tmp_path / "run"
    ray_temp = tempfile.mkdtemp(prefix="sp-slurm-", dir="/tmp")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node[1]",
           "SLURM_JOB_ID": "1", "SELFPLAY_RAY_PORT": str(free_port()), "SELFPLAY_DASHBOARD_PORT": str(free_port()),
           "SELFPLAY_RAY_TEMP_DIR": ray_temp,
           "SELFPLAY_RAY_HEAD_ARGS": f"--dashboard-agent-listen-port={free_port()} --ray-client-server-port={free_port()}"}
    env.pop("RAY_ADDRESS", None)
    run_script(["bash", "launch/slurm.sbatch", *FAST, f"run.dir={run_dir}"], env, ray_temp)
    assert_one_iteration(run_dir)


LAUNCH_FILES = sorted([*REPO.glob("launch/*.yaml"), REPO / "launch/slurm.sbatch", *REPO.glob("configs/scale/*.yaml")])
TOKEN = re.compile(r"[\w./-]+=[^\s'\"$]+|[\w/]+")


def selfplay_commands(text: str) -> list[list[str]]:
    """The arguments of every ``python -m selfplay.run`` (or ``launch/slurm.sbatch``, which passes them on) in
    ``text``, comment markers and line continuations removed: an optional preset, then key=value words."""
    lines = (line.strip().lstrip("#").strip() for line in text.splitlines())
    flat = " ".join(line[:-1] if line.endswith("\\") else line for line in lines)
    commands = []
    for part in re.split(r"python -m selfplay\.run|launch/slurm\.sbatch", flat)[1:]:
        args = []
        for word in part.split():
            preset = not args and (REPO / "configs" / f"{word}.yaml").exists()
            if not (preset or TOKEN.fullmatch(word) and "=" in word):
                break
            args.append(word)
        if args:
            commands.append(args)
    return commands


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_launch_files_parse_and_name_only_schema_keys(path):
    text = path.read_text()
    if path.suffix == ".yaml":
        parsed = yaml.safe_load(text)
        assert isinstance(parsed, dict)
    if path.parent.name == "scale":
        load_config([f"scale/{path.stem}"])  # the preset itself: only schema keys, valid values
    commands = selfplay_commands(text)
    assert commands, f"{path.name}: no selfplay.run command with arguments"
    for args in commands:
        load_config(args)  # unknown keys and bad values raise ConfigError


def test_the_dashboard_listens_on_loopback_wherever_we_start_a_head():
    """The dashboard takes job submissions (code execution): every head the launch files start binds it to
    127.0.0.1, but KubeRay's, whose operator reaches it on the pod IP (a ClusterIP Service; the file says so);
    the run's own local cluster starts none."""
    hosts = {p.name: re.findall(r"dashboard-host[=:]\s*\"?([\d.]+)", p.read_text())
             for p in (REPO / "launch").iterdir() if p.is_file()}
    assert hosts["local_job.sh"] == ["127.0.0.1"] and hosts["ray-cluster.yaml"] == ["127.0.0.1"]
    assert {h for name, found in hosts.items() if name != "kuberay-rayjob.yaml" for h in found} == {"127.0.0.1"}
    assert hosts["kuberay-rayjob.yaml"] == ["0.0.0.0"]
    assert "no Ingress or LoadBalancer" in (REPO / "launch" / "kuberay-rayjob.yaml").read_text()
    assert "include_dashboard=False" in (REPO / "selfplay" / "run.py").read_text()
