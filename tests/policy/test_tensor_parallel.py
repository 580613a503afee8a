"""Tensor parallelism's limits and vLLM's CPU thread binding (``selfplay.policy.tensor_parallel``)."""

from __future__ import annotations

import os

import pytest

from selfplay.policy.tensor_parallel import BIND, bind_cpu_workers, cpu_binding, tensor_parallel_problems


@pytest.mark.parametrize("cpus,ranks,expected", [
    ([0, 1], 2, "0|1"), ([0, 1, 2, 3], 2, "0,1|2,3"), ([3, 1, 2, 0], 2, "0,1|2,3"), ([0, 1, 2], 2, "0,1|2"),
    ([4, 5, 6, 7, 8], 3, "4,5|6,7|8"), ([0, 1], 1, "0,1")])
def test_each_rank_gets_consecutive_cores_every_core_once(cpus, ranks, expected):
    binding = cpu_binding(cpus, ranks)
    assert binding == expected
    groups = [[int(c) for c in g.split(",")] for g in binding.split("|")]
    assert len(groups) == ranks and sorted(c for g in groups for c in g) == sorted(cpus)
    assert max(map(len, groups)) - min(map(len, groups)) <= 1


def test_more_ranks_than_cores_is_refused():
    with pytest.raises(ValueError, match="3 vLLM CPU workers need a core each; 2 are available"):
        cpu_binding([0, 1], 3)


def test_the_binding_is_set_from_this_processs_cores_unless_the_user_chose_one(monkeypatch):
    monkeypatch.delenv(BIND, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    bind_cpu_workers(1)
    assert BIND not in os.environ  # one rank: vLLM's own default serves
    bind_cpu_workers(2)
    assert os.environ[BIND] == "0,1|2,3"
    monkeypatch.setenv(BIND, "1|0")
    bind_cpu_workers(2)
    assert os.environ[BIND] == "1|0"


@pytest.mark.parametrize("tp,heads,kv,cpus,problems", [
    (2, 2, 2, 2, []), (2, 8, 1, None, []), (4, 8, 2, None, []), (2, 32, 8, 16, []),
    (3, 4, 4, None, ["does not divide the policy's 4 attention heads",
                     "and the policy's 4 key/value heads: one must divide the other"]),
    (4, 8, 6, None, ["and the policy's 6 key/value heads"]),
    (4, 8, 8, 2, ["on the CPU needs a core per worker; this machine has 2"]),
    (2, None, None, 2, [])])
def test_what_a_model_and_a_machine_can_take(tp, heads, kv, cpus, problems):
    found = tensor_parallel_problems(tp, heads, kv, cpus)
    assert len(found) == len(problems) and all(p in f for p, f in zip(problems, found))
    assert all(f.startswith(f"generator.tensor_parallel={tp} ") for f in found)
