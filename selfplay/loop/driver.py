"""The self-play loop (docs/methods.md §1): one function that reads like the algorithm box.

    for t = 1..T:
        take this iteration's prompts (with a multi-objective scorer: each with sampled directions v
            in its system prompt)
        generate K responses per prompt from pi_{t-1}
        score them (K x K preference log-odds per prompt; multi-objective: S = v^T (r_i - r_j) / tau)
            and save the scored rollout (a run resumed at t reuses it instead); with ``run.stream``, each
            chunk of prompts is scored as soon as it is generated, while the next ones generate
        build the algorithm's batch (+ memory replay) and train pi_t from pi_{t-1} (or pi_0)
            (colocated: the generators sleep meanwhile)
        send pi_t's weights to the generators, in place
        evaluate pi_t against pi_0 and pi_{t-1} on held-out prompts (multi-objective: over a grid of
            directions, with each policy's Pareto front)
        checkpoint, then append the metrics line (the commit point of iteration t); then the loggers; the
            plots and the report are redrawn beside the next iteration (``loop.background``)
    (an actor that fails is started again and its unfinished calls made again; where that cannot be done
    inside the stage, iteration t starts again from pi_{t-1}'s checkpoint: ``loop.workers``)

The driver owns the control flow; actors only hold resources (see ``actors``).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional

from omegaconf import DictConfig

from actors.group import leader
from selfplay.core.checkpoint import append_metrics, atomic_write_json, iteration_dir, read_metrics
from selfplay.core.loggers import Loggers
from selfplay.core.html_report import REPORT
from selfplay.core.html_report import write as write_report
from selfplay.core.rollout_store import drop_rollouts, load_rollout, rollout_path, save_rollout
from selfplay.loop.background import Latest
from selfplay.loop.evaluation import eval_path, evaluate, iteration_record, load_eval, summary_line
from selfplay.loop.faults import fault_point
from selfplay.loop.judges import Judge
from selfplay.loop.sources import Oracle, Prompts
from selfplay.loop.stages import BadNumbers, generate, iteration_seed, sample_eval, take_prompts, train
from selfplay.loop.sync import generators_asleep, sync_weights
from selfplay.loop.workers import ActorFailure, Workers, failing_as, stage_timeout

log = logging.getLogger(__name__)


@contextmanager
def stage(name: str, t: int, times: dict[str, float]) -> Iterator[None]:
    fault_point(name, t)  # tests of resume stop the driver here (SELFPLAY_FAULT)
    start = time.perf_counter()
    try:
        with failing_as(name):  # an actor that dies or hangs here: ActorFailure
            yield
    except (BadNumbers, FloatingPointError) as e:  # an actor's arrives as RayTaskError: its cause is the message
        raise BadNumbers(f"iteration {t}, {name}: {getattr(e, 'cause', e)}") from e
    times[f"{name}_s"] = round(time.perf_counter() - start, 3)


def selfplay(cfg: DictConfig, workers: Workers, judge: Judge, prompts: Prompts, run_dir: Path, start: int,
             oracle: Optional[Oracle] = None) -> list[dict]:
    """Iterations start+1 .. cfg.iter.  Returns their metrics records."""
    if start == 0:
        atomic_write_json(eval_path(run_dir, 0), sample_eval(workers, prompts, cfg))
    initial, previous = load_eval(run_dir, 0), load_eval(run_dir, start)
    loggers = Loggers(run_dir, cfg, read_metrics(run_dir) if start else [])  # TensorBoard, W&B, MLflow
    drawing = Latest("plots and report", cfg.log.report_share)  # off the critical path; close: the last one drawn
    records, began = [], time.perf_counter()
    try:
        for t in range(start + 1, cfg.iter + 1):
            workers.failures.iteration = t
            while True:
                try:
                    record, current = iteration(t, cfg, workers, judge, prompts, run_dir, initial, previous, oracle)
                    break
                except ActorFailure as failure:  # not recovered inside its stage: iteration t again, from pi_{t-1}
                    workers.recover(failure, t - 1, cfg)
            fault_point("metrics", t)
            append_metrics(run_dir, record)  # commit point: iteration t is complete
            drop_rollouts(run_dir)
            loggers.iteration(record)
            drawing.submit(lambda: draw(run_dir, judge, cfg.log.report))
            line = f"{summary_line(record)} | ETA {eta(time.perf_counter() - began, t - start, cfg.iter - t)}"
            log.info(line)
            print(line, flush=True)
            records.append(record)
            previous = current
    finally:
        drawing.close()
    loggers.close()
    return records


def iteration(t: int, cfg: DictConfig, workers: Workers, judge: Judge, prompts: Prompts, run_dir: Path,
              initial: dict, previous: dict, oracle: Optional[Oracle]) -> tuple[dict, dict]:
    """Iteration t up to its checkpoint: its metrics record (not yet committed) and pi_t's held-out samples."""
    times: dict[str, float] = {}
    rollout = take_prompts(prompts, judge, cfg, t)
    saved = load_rollout(run_dir, t, rollout.uids)  # a resumed run's, saved before it stopped
    if saved is not None:
        rollout, times["generate_s"], times["score_s"] = saved, 0.0, 0.0
        log.info("iteration %d: reusing the saved rollout %s", t, rollout_path(run_dir, t))
    else:
        scoring = judge.scoring(workers, rollout.prompts, cfg.generator.k, cfg)  # in scorer.batch_size chunks
        with stage("generate", t, times):  # run.stream: a chunk is sent to the scorer once all of it is generated
            samples = generate(workers, rollout.prompt_ids, cfg.generator.k, cfg.generator.temperature, cfg,
                               seed=iteration_seed(cfg, t, 1), desc="generate",
                               arrived=scoring.add_samples if cfg.run.stream else None)
            rollout = rollout.with_samples(samples)
        with stage("score", t, times):
            scoring.add_samples(0, samples)  # sends the chunks not sent yet (streamed: none)
            verdict = judge.verdict(scoring.collect(), rollout.directions)
            rollout = replace(rollout, scores=verdict.scores, rewards=verdict.rewards)
            save_rollout(run_dir, t, rollout)
    with generators_asleep(workers, cfg, times), stage("train", t, times):  # colocated: the learner has the GPUs
        train_stats = train(workers, rollout, cfg, t)
    with stage("sync", t, times):
        buckets = sync_weights(workers, cfg)
    with stage("eval", t, times):
        current = sample_eval(workers, prompts, cfg)
        result = evaluate(workers, judge, prompts, current, initial, previous, cfg, oracle)
    with stage("checkpoint", t, times):
        leader(workers.learner.save(str(iteration_dir(run_dir, t))), stage_timeout(cfg, "checkpoint"), "checkpoint")
        judge.save(iteration_dir(run_dir, t))
        atomic_write_json(eval_path(run_dir, t), current)
        generators = workers.generator_group()
        engine_starts = sum(generators.wait(generators.engine_starts(), stage_timeout(cfg, "eval"), "engine starts"))
    return iteration_record(t, result, train_stats, rollout, engine_starts, buckets, times, saved is not None,
                            workers.failures.of_iteration(t)), current


def draw(run_dir: Path, judge: Judge, report: bool) -> None:
    """The judge's plots (DPA's fronts) and, with ``log.report``, RUN/report.html, from the committed metrics
    alone (so the newest drawing supersedes any older one); like a logger, a failure warns and the run goes on."""
    try:
        judge.plot(run_dir)
        if report:
            write_report({run_dir.name: run_dir}, run_dir / REPORT)
    except Exception as e:  # noqa: BLE001 - the iteration is committed; the report can be written again
        log.warning("the plots or the report were not written: %s: %s (python -m selfplay.report %s)",
                    type(e).__name__, e, run_dir)


def eta(elapsed: float, done: int, left: int) -> str:
    """The time ``left`` more iterations take at the mean pace of the ``done`` ones so far."""
    seconds = round(elapsed / done * left)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s"
