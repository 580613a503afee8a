"""`launch/local_job.sh`: one short iteration submitted as a Ray job to a Ray head of the script's own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil

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


def test_local_job_runs_one_iteration(tmp_path):
    run_dir = tmp_path / "run"
    # The head gets its own temp dir (short: Ray's socket paths must fit in 107 bytes) and dashboard port, so
    # it neither reuses nor disturbs another Ray instance on this machine, such as the suite's `ray.init()`.
    ray_temp = tempfile.mkdtemp(prefix="sp-ray-", dir="/tmp")
    env = {**os.environ, "SELFPLAY_DASHBOARD_PORT": str(free_port()), "SELFPLAY_RAY_TEMP_DIR": ray_temp}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(["bash", "launch/local_job.sh", *FAST, f"run.dir={run_dir}"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap stops its head
        out, _ = proc.communicate(timeout=60)
        raise AssertionError(f"launch/local_job.sh timed out:\n{out[-5000:]}") from None
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
    assert f"metrics: {run_dir}/metrics.jsonl" in out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["iteration"] == 1
    assert 0.0 <= records[0]["win_rate_vs_initial"] <= 1.0
