"""Placement across nodes: on a simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, custom resources)
the generators and the scorer go to one node and the learner ranks to the other, and one iteration runs end to
end, the weights crossing nodes through the object store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e  # starts a Ray cluster of its own, in a subprocess

# In its own process: a cluster of its own cannot share the suite's ray.init().
TWO_NODES = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"gen": 4}})
learner_node = cluster.add_node(num_cpus=2, resources={"learn": 4})
ray.init(address=cluster.address, log_to_driver=False)
from selfplay.run import main

rc = main(sys.argv[1:])
role = {cluster.head_node.node_id: "gen", learner_node.node_id: "learn"}
placed = sorted((a.class_name, role.get(a.node_id, "?")) for a in list_actors(detail=True, limit=1000))
print("PLACED " + json.dumps({"rc": rc, "placed": placed}))
ray.shutdown()
cluster.shutdown()
"""


def test_generators_on_one_node_learner_on_the_other(tmp_path):
    run_dir = tmp_path / "run"
    args = ["smoke", "run.progress=false", "generator.backend=hf", "train.world_size=2", f"run.dir={run_dir}",
            "placement.generator_resource=gen", "placement.scorer_resource=gen", "placement.learner_resource=learn",
            "placement.strategy=STRICT_PACK"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", TWO_NODES, *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    line = next((x for x in out.stdout.splitlines() if x.startswith("PLACED ")), None)
    assert line is not None, (out.stdout[-3000:], out.stderr[-5000:])
    result = json.loads(line[len("PLACED "):])
    assert result["rc"] == 0, out.stderr[-5000:]
    assert sorted(map(tuple, result["placed"])) == [("GenerationWorker", "gen"), ("LearnerWorker", "learn"), ("LearnerWorker", "learn"),
                                                    ("ScoringWorker", "gen")]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1] and records[0]["sync_buckets"] >= 1
