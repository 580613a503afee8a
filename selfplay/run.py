"""Entry point: ``python -m selfplay.run [preset] key=value ...`` (see --help).

A recipe that reads top to bottom: resolve the config, resolve the models and
prompts (building the embedded world if none are named), prepare the run
directory, start the actors, run the loop.
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selfplay.config.loading import help_text, load_or_report, to_yaml
from selfplay.config.schema import Config, ConfigError

log = logging.getLogger("selfplay")
DISK_ERRORS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system"}
# train keys a resumed run may change: they place the learner, they do not change what it computes
LEARNER_PLACEMENT = ("world_size", "activation_checkpointing", "cpu_offload", "num_cpus", "num_gpus")


def choose_judge(cfg: DictConfig, scorer: str):
    """The run's judge (``loop.judges``), chosen once: directions over a multi-objective model's attributes
    (``scorer.attributes``), or a preference model's K x K log-odds (``config.scoring.directional`` says which).
    DirectionError on a direction that does not fit the model."""
    from selfplay.config.scoring import attribute_selection, directional
    from selfplay.loop.judges import DirectionalJudge, PreferenceJudge

    if not directional(cfg):
        return PreferenceJudge()
    from selfplay.models.kinds import attribute_names
    from selfplay.steering.directional import Steering

    s = cfg.scorer
    names = attribute_names(scorer, s.kind, attribute_selection(s), s.trust_remote_code)
    return DirectionalJudge(Steering.from_config(cfg, names))


def start_errors() -> tuple[type[Exception], ...]:
    """What a start can fail on before any work; each is reported in one line, exit code 2."""
    from selfplay.config.memory import PlanError
    from selfplay.core.jsonl import DataError
    from selfplay.core.lm import ModelLoadError
    from selfplay.loop.sources import RunError
    from selfplay.steering.directions import DirectionError

    return RunError, DataError, ModelLoadError, ConfigError, DirectionError, PlanError


def resolve_sources(cfg: DictConfig):
    """The run's models and data (the embedded world's where none are named), its oracle (with the world's
    prompts) and its judge.  The judge comes before the policy: a bad direction fails before the world's
    steerable warm start is trained."""
    from selfplay.loop.preflight import check_scorer
    from selfplay.loop.sources import resolve_data, resolve_policy

    data, oracle = resolve_data(cfg)
    check_scorer(data.scorer, cfg)  # its code and heads before its attributes are read for the directions
    judge = choose_judge(cfg, data.scorer)
    return resolve_policy(cfg, data, judge.directional), oracle, judge


def load_prompt_splits(cfg: DictConfig, sources, tokenizer, judge):
    """Training and held-out prompts (held-out: the first eval.prompts, as the judge evaluates them: with
    directions, each x every grid direction), encoded with the policy's chat template; and the memory-replay
    rows, if any."""
    from functools import partial

    from selfplay.core.lm import encode_exchange, encode_prompt
    from selfplay.data.prompts import add_system_prompt, load_prompts, load_responses, split_prompts
    from selfplay.loop.sources import Prompts

    d = cfg.data
    prompts = add_system_prompt(load_prompts(sources.prompts, d.prompt_column, d.split), d.system_prompt)
    if d.eval_prompts is None:
        train, held_out = split_prompts(prompts, d.eval_size, cfg.run.seed)
    else:
        train, held_out = prompts, add_system_prompt(load_prompts(d.eval_prompts, d.prompt_column, d.split), d.system_prompt)
    held_out, directions = judge.evaluation_prompts(held_out[:cfg.eval.prompts])
    encode = partial(encode_prompt, tokenizer)
    replay = []
    if cfg.algo.replay:
        for prompt, response in load_responses(sources.replay, d.prompt_column, d.response_column, d.split):
            ids, n = encode_exchange(tokenizer, add_system_prompt([prompt], d.system_prompt)[0], response)
            replay.append((ids[:n], ids[n:]))
    return Prompts(train, [encode(p) for p in train], held_out, [encode(p) for p in held_out], encode, directions,
                   replay)


def prepare_run_dir(cfg: DictConfig, sources) -> tuple[Path, int]:
    """Create or reopen the run directory; returns it and the last complete iteration.  ``config.yaml`` records
    the config with its resolved sources; a resumed run must resolve to the same."""
    from selfplay.core.checkpoint import atomic_write_text, clean_incomplete, last_complete_iteration, read_metrics
    from selfplay.core.rollout_store import drop_rollouts
    from selfplay.loop.sources import RunError
    from selfplay.loop.preflight import check_writable

    run_dir = Path(cfg.run.dir).expanduser().resolve()
    check_writable(run_dir)
    saved = run_dir / "config.yaml"
    recorded = sources.record(cfg)
    if not cfg.run.resume:
        if saved.exists() or read_metrics(run_dir):
            raise RunError(f"{run_dir} already holds a run; pass run.resume=true to continue it, or choose another run.dir")
        atomic_write_text(saved, to_yaml(recorded))
        return run_dir, 0
    if not saved.exists():
        raise RunError(f"run.resume=true but {saved} does not exist: nothing to resume")
    # a run saved before a key existed reads that key's default (e.g. algo.length_normalize)
    before = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(saved))

    def settings(c: DictConfig, key: str) -> dict:
        out = OmegaConf.to_container(c[key], resolve=True)
        if key == "train":  # where the learner runs may change: checkpoints are full, whatever the world size
            out = {k: v for k, v in out.items() if k not in LEARNER_PLACEMENT}
        return out

    differing = [k for k in ("policy", "data", "generator", "scorer", "algo", "train", "eval", "directions", "world")
                 if settings(before, k) != settings(recorded, k)]
    differing += ["run.seed"] * (before.run.seed != cfg.run.seed)
    if differing:
        raise RunError(f"run.resume=true with settings that differ from {saved}: {', '.join(differing)}")
    last = last_complete_iteration(run_dir)
    for p in clean_incomplete(run_dir, last):
        log.info("removed incomplete %s", p)
    drop_rollouts(run_dir, keep=last + 1)  # the next iteration's scored rollout, if saved, is reused
    atomic_write_text(saved, to_yaml(recorded))
    return run_dir, last


def forget_start(run_dir: Path) -> None:
    """Undo a fresh start that failed before its first iteration (an actor that would not start): its
    ``config.yaml`` goes, so the directory holds no run and the same command starts again."""
    from selfplay.core.checkpoint import read_metrics

    if not read_metrics(run_dir):
        (run_dir / "config.yaml").unlink(missing_ok=True)


def starting_point(run_dir: Path, last: int, sources) -> tuple[str, str]:
    """The policy and tokenizer iteration ``last + 1`` starts from: pi_0 as configured, or iteration ``last``'s
    checkpoint (which carries its tokenizer)."""
    from selfplay.core.checkpoint import iteration_dir

    if last == 0:
        return sources.policy, sources.policy_tokenizer
    return str(iteration_dir(run_dir, last)), str(iteration_dir(run_dir, last))


def start_workers(cfg: DictConfig, sources, run_dir: Path, last: int, processes=None):
    """The generators, the scorer and the learner, started from iteration ``last``'s policy (pi_0, or the
    checkpoint a resumed run continues from); each is built from one spec made from its config sections, in the
    ``processes`` started ahead of it (``selfplay.loop.startup``) if given.  How each was started is kept
    (``Spawn``), to start it again after a failure."""

    from actors.group import gather
    from actors.learner import LearnerGroup
    from selfplay.config.scoring import attribute_selection
    from selfplay.loop.startup import (GenerationWorker, Processes, ScoringWorker, generator_options,
                                       learner_placement, scorer_options, stop)
    from selfplay.loop.sync import connect_weight_transfer, send_code_table, sync_weights
    from selfplay.loop.workers import Failures, Spawn, Workers, stage_timeout
    from selfplay.models.preference_scorer import ScorerSpec
    from selfplay.policy.specs import GeneratorSpec, LearnerSpec, plain

    s = plain(cfg.scorer)
    # a restarted generator starts from the same files, then gets the learner's weights
    generator_spec = GeneratorSpec.of(cfg, *starting_point(run_dir, last, sources))
    scorer_spec = ScorerSpec.of(s, sources.scorer, sources.scorer_tokenizer, sources.policy_tokenizer,  # PairRM's
                                attribute_selection(s))  # source: the policy's chat template

    def generator():
        return GenerationWorker.options(**generator_options(cfg)).remote(generator_spec)

    def scorer():
        return ScoringWorker.options(**scorer_options(cfg)).remote(scorer_spec)

    def learner(t: int):  # from iteration t's checkpoint, its optimizer state included
        return LearnerGroup.start(learner_spec(t), *learner_placement(cfg))

    def learner_spec(t: int) -> LearnerSpec:
        return LearnerSpec.of(cfg, *starting_point(run_dir, t, sources), sources.policy)

    if processes is None:
        processes = Processes.start(cfg)
    ready = ([g.setup.remote(generator_spec) for g in processes.generators]
             + [processes.scorer.setup.remote(scorer_spec)] + processes.learner.setup(learner_spec(last)).ready)
    workers = Workers(processes.generators, processes.scorer, processes.learner,
                      Spawn(generator, scorer, learner, sync_weights), Failures(cfg.run.max_failures))
    try:  # start-up errors now, each named
        gather(ready, "start", False, stage_timeout(cfg, "start"), workers.actor_names())
        connect_weight_transfer(workers, cfg)
        send_code_table(workers, cfg)  # LPC: a resumed run's trained codes are served from the first generation
    except BaseException:
        stop(workers)
        raise
    return workers


def check_inputs(cfg: DictConfig):
    """Everything that can refuse the run before any actor gets a model: the sources (the world built if none
    are named), the memory plan, the models' weights and tokenizers, the prompts, the run directory (prepared
    last: a refused run writes nothing).  Returns (sources, oracle, judge, prompts, run_dir, last)."""
    from selfplay.config.memory import plan
    from selfplay.core.lm import ModelTrust, load_tokenizer
    from selfplay.loop.preflight import check_models
    from selfplay.loop.sources import RunError

    sources, oracle, judge = resolve_sources(cfg)
    if cfg.placement.check:  # before any model or prompt is loaded
        _, problems = plan(cfg, sources.policy, sources.scorer)
        if problems:
            raise RunError(f"the plan does not fit: {problems[0]}"
                           + (f" (and {len(problems) - 1} more: python -m selfplay.plan ...)" if len(problems) > 1 else ""))
    check_models(sources, cfg)  # weights present and safe, tokenizers within the embeddings
    tokenizer = load_tokenizer(sources.policy_tokenizer, ModelTrust.of(cfg.policy))
    prompts = load_prompt_splits(cfg, sources, tokenizer, judge)
    return sources, oracle, judge, prompts, *prepare_run_dir(cfg, sources)


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_or_report(argv)
    if cfg is None:
        return 2

    import ray

    from actors.group import StageTimeout
    from selfplay.core.checkpoint import last_complete_iteration
    from selfplay.loop.driver import selfplay
    from selfplay.loop.stages import BadNumbers
    from selfplay.loop.startup import InBackground, Processes, stop
    from selfplay.loop.workers import TooManyFailures

    owns_ray = not ray.is_initialized()  # a caller's (e.g. a test's) cluster is left running
    checked = InBackground(lambda: check_inputs(cfg), "selfplay-checks")  # beside Ray's start (loop.startup)
    processes = workers = launch_error = run_dir = None
    try:
        try:
            if owns_ray:
                ray.init(address=cfg.run.ray_address, include_dashboard=False)
            processes = Processes.start(cfg) if ray.is_initialized() else None
        except Exception as e:  # noqa: BLE001 - reported after the checks: a refused input is the better message
            launch_error = e
        try:
            sources, oracle, judge, prompts, run_dir, last = checked.result()
        except start_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if launch_error is None and last >= cfg.iter:
            print(f"{run_dir}: all {cfg.iter} iterations are complete")
            return 0
        log.info("run dir %s; starting at iteration %d of %d from %s", run_dir, last + 1, cfg.iter,
                 starting_point(run_dir, last, sources)[0])
        try:
            if launch_error is not None:
                raise launch_error
            workers = start_workers(cfg, sources, run_dir, last, processes)
        except BaseException:
            if not cfg.run.resume:  # nothing was run: the same command may start it again
                forget_start(run_dir)
            raise
        selfplay(cfg, workers, judge, prompts, run_dir, last, oracle)
    except (StageTimeout, TooManyFailures, BadNumbers) as e:
        again = ("the same command starts it again" if workers is None and not cfg.run.resume else
                 f"the run is intact up to iteration {last_complete_iteration(run_dir)} (run.resume=true continues it)")
        print(f"error: {e}; {again}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in DISK_ERRORS or run_dir is None:
            raise
        done = last_complete_iteration(run_dir)
        print(f"error: {DISK_ERRORS[e.errno]} writing {e.filename or run_dir}: iteration {done + 1} was not saved; "
              f"the run is intact up to iteration {done}: make room and continue with run.resume=true",
              file=sys.stderr)
        return 1
    finally:
        if owns_ray and ray.is_initialized():
            ray.shutdown()
        elif workers is not None:
            stop(workers)
        elif processes is not None:
            stop(processes)
    print(f"done: {run_dir}/metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
