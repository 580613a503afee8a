"""Streamed rollouts (``run.stream``, issue 29 part 2): each scoring chunk is sent as soon as all its prompts are
generated, in the same chunks as the staged run's, so the rollout, the metrics and the weights are the same."""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch
from safetensors.torch import load_file

import selfplay.loop.stages as stages
from selfplay.config.loading import load_config
from selfplay.core.checkpoint import read_metrics
from selfplay.loop.judges import PreferenceJudge
from selfplay.loop.stages import Scoring
from selfplay.loop.workers import Workers
from tests.loop.test_e2e import without_timings
from tests.loop.test_failures import run_killing
from tests.loop.test_judges import PROMPTS, directional
from tests.loop.test_resume import same

CFG = load_config(["smoke", "scorer.batch_size=8"])  # K = 4: chunks of 2 prompts


def recording_scorer(sent: list) -> Workers:
    """Workers whose scorer (no Ray) records each call ``(method, prompts, responses)``; its ref is its index."""
    def method(name: str):
        return SimpleNamespace(remote=lambda prompts, responses: sent.append((name, prompts, responses)) or len(sent))
    return Workers([], SimpleNamespace(score=method("score"), rewards=method("rewards")), None)


def user(i: int) -> list[dict]:
    return [{"role": "user", "content": f"prompt {i}"}]


def test_a_chunk_is_sent_once_all_its_prompts_have_responses_and_never_twice():
    prompts, responses = [user(i) for i in range(5)], [[f"y{i}.{j}" for j in range(4)] for i in range(5)]
    at_once: list = []
    staged = Scoring(recording_scorer(at_once), "score", prompts, 4, CFG)
    staged.add(0, responses)
    sent: list = []
    streamed = Scoring(recording_scorer(sent), "score", prompts, 4, CFG)
    streamed.add(1, responses[1:2])
    assert sent == []  # chunk 0 (prompts 0, 1) still lacks prompt 0
    streamed.add(3, responses[3:5])
    assert [p for _, p, _ in sent] == [prompts[4:5]]  # chunk 2 (prompt 4) complete; chunk 1 lacks prompt 2
    streamed.add(0, responses[0:1])
    streamed.add(0, responses)  # what the driver's score stage does: only chunk 1 is left to send
    assert sorted(sent, key=lambda call: call[1][0][0]["content"]) == at_once
    assert len(at_once) == 3 and streamed.refs == [2, 3, 1]  # in the order sent: chunks 2, 0, 1


def test_the_directional_judge_streams_rewards_of_the_prompts_without_their_directions():
    judge = directional()
    messages, _, directions = judge.training_prompts(PROMPTS, [[1], [2]], lambda m: [len(m)], random.Random(0))
    sent: list = []
    scoring = judge.scoring(recording_scorer(sent), messages, 2, CFG)  # 4 units, K = 2: chunks of 4 prompts
    scoring.add_samples(0, [[SimpleNamespace(text=f"y{i}{j}") for j in range(2)] for i in range(4)])
    [(method, prompts, responses)] = sent
    assert method == "rewards" and prompts == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    assert responses == [["y00", "y01"], ["y10", "y11"], ["y20", "y21"], ["y30", "y31"]]
    verdict = judge.verdict([torch.tensor([[80.0, 10.0], [50.0, 50.0]])] * 4, directions)
    assert len(verdict.scores) == 4 and verdict.scores[0].shape == (2, 2) and len(verdict.rewards) == 4
    assert PreferenceJudge().verdict(verdict.scores, None).scores == verdict.scores


def test_gather_passes_each_call_on_once_as_it_finishes_a_redone_one_when_it_is_done_again(ray_cluster):
    import os
    import signal
    import time

    import ray

    from actors.group import gather
    from tests.loop.test_failures import Worker, pid

    workers = [Worker.remote() for _ in range(2)]
    busy, arrived = pid(workers[1]), []

    def redo(i: int, error: Exception):
        workers[i] = Worker.remote()
        return workers[i].work.remote(i, 0.0)

    refs = [workers[0].work.remote(0, 0.5), workers[1].work.remote(1, 600)]
    time.sleep(0.1)
    os.kill(busy, signal.SIGKILL)  # mid-call: call 1 is made again, and arrives once, after call 0 or before it
    assert gather(refs, "generate", False, 60.0, ["g0", "g1"], redo, lambda i, v: arrived.append((i, v))) == [0, 10]
    assert sorted(arrived) == [(0, 0), (1, 10)]
    for w in workers:
        ray.kill(w)


def test_a_streamed_run_equals_the_staged_one_through_a_scorer_killed_mid_stream(hf_run, tmp_path, monkeypatch):
    """The smoke preset, two iterations: 32 prompts generated in 4 chunks of 8, scored in 2 chunks of 16.
    Iteration 1 streams untouched: its first scoring chunk is sent when half the prompts are generated, and its
    metrics (all but the timings) and weights equal the staged run's (``hf_run``) exactly.  Then the scorer's
    process is killed as iteration 2 starts generating: the chunks sent to it meanwhile fail, the score stage
    restarts it and sends them again, and iteration 2 ends as the staged run's too, its failure listed."""
    generated_at_send, send = [], Scoring._send

    def recording_send(self, c: int):
        generated_at_send.append(sum(r is not None for r in self.responses))
        return send(self, c)

    monkeypatch.setattr(stages.Scoring, "_send", recording_send)
    run_dir = tmp_path / "run"
    assert run_killing(monkeypatch, run_dir, "generate", "scorer", ("run.stream=true",), resume=False) == 0
    # iteration 1: its rollout's two chunks, then the evaluation's one chunk of its 16 prompts (all at once)
    assert generated_at_send[:3] == [16, 32, 16]
    streamed, staged = read_metrics(run_dir), read_metrics(hf_run)
    assert without_timings(streamed[0]) == without_timings(staged[0])
    [failure] = streamed[1]["actor_failures"]
    assert failure["stage"] == "score" and failure["actor"] == "scorer" and "ActorDiedError" in failure["cause"]
    assert {**same(streamed[1]), "actor_failures": []} == same(staged[1])
    for t in (1, 2):
        ours, theirs = (load_file(str(d / f"iter_{t}" / "model.safetensors")) for d in (run_dir, hf_run))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
