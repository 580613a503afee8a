"""Entry point: ``python -m selfplay.run [preset] key=value ...`` (see --help).

A recipe that reads top to bottom: resolve the config, resolve the models and
prompts (building the embedded world if none are named), prepare the run
directory, start the actors, run the loop.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selfplay.config import ConfigError, help_text, load_config, to_yaml

log = logging.getLogger("selfplay")


class RunError(RuntimeError):
    """A problem with the run directory or the named resources, found before any work."""


def resolve_sources(cfg: DictConfig):
    """Fill scorer/prompt/replay sources, from the embedded world where none is named (the policy: ``resolve_policy``).

    Returns the oracle (``loop.Oracle``) when the embedded world supplies the prompts, else None.
    """
    oracle = None
    needs_replay = bool(cfg.algo.get("replay")) and cfg.data.replay is None
    if cfg.policy.model is None or cfg.scorer.model is None or cfg.data.prompts is None or needs_replay:
        if cfg.policy.model is not None and cfg.scorer.model is None:
            raise RunError("scorer.model is required with policy.model: the embedded world's scorers only judge its own policy")
        if cfg.data.prompts is not None and needs_replay:
            raise RunError(f"algo.replay={cfg.algo.replay} mixes original responses into fine-tuning: name them with "
                           "data.replay (e.g. your SFT set, prompt/response rows) or set algo.replay=0")
        from selfplay.world.build import get_world

        world = get_world(cfg.world)
        cfg.scorer.model = cfg.scorer.model or world.scorer(cfg.scorer.kind, cfg.world)
        if needs_replay:
            cfg.data.replay = world.sft_data()
        if cfg.data.prompts is None:
            cfg.data.prompts = world.prompts
            from selfplay.loop import Oracle
            from selfplay.world import oracle as world_oracle

            oracle = Oracle(world_oracle.preference_matrix, world_oracle.attributes, world_oracle.ATTRIBUTES)
    cfg.scorer.tokenizer = cfg.scorer.tokenizer or cfg.scorer.model
    return oracle


def resolve_policy(cfg: DictConfig, steering) -> None:
    """Fill the policy (and its tokenizer) where none is named: the embedded world's SFT policy or, when directions
    go into system prompts, its steerable warm start (seed 003's first iteration samples from a SteerLM model).
    Called after the directions are validated, so a bad one fails before the warm start is trained."""
    if cfg.policy.model is None:
        from selfplay.world.build import get_world

        world = get_world(cfg.world)
        cfg.policy.model = world.steerable_policy(cfg.world) if steering is not None else world.policy
    cfg.policy.tokenizer = cfg.policy.tokenizer or cfg.policy.model


def load_steering(cfg: DictConfig):
    """With a multi-objective scorer: directions over its attributes (``steering.Steering``), else None."""
    if cfg.scorer.kind != "multi_objective":
        return None
    from selfplay.models.multi_objective import attribute_names
    from selfplay.steering import Steering

    return Steering.from_config(cfg, attribute_names(cfg.scorer.model))


def load_prompt_splits(cfg: DictConfig, tokenizer, steering=None):
    """Training and held-out prompts (held-out: the first eval.prompts, with steering each x every grid
    direction), encoded with the policy's chat template; and the memory-replay rows, if any."""
    from functools import partial

    from selfplay.data import add_system_prompt, load_prompts, load_responses, split_prompts
    from selfplay.loop import Prompts
    from selfplay.modeling import encode_exchange, encode_prompt

    d = cfg.data
    prompts = add_system_prompt(load_prompts(d.prompts, d.prompt_column, d.split), d.system_prompt)
    if d.eval_prompts is None:
        train, held_out = split_prompts(prompts, d.eval_size, cfg.run.seed)
    else:
        train, held_out = prompts, add_system_prompt(load_prompts(d.eval_prompts, d.prompt_column, d.split), d.system_prompt)
    held_out, directions = held_out[:cfg.eval.prompts], None
    if steering is not None:
        held_out, directions = steering.evaluation_units(held_out)
    encode = partial(encode_prompt, tokenizer)
    replay = []
    if cfg.algo.get("replay"):
        for prompt, response in load_responses(d.replay, d.prompt_column, d.response_column, d.split):
            ids, n = encode_exchange(tokenizer, add_system_prompt([prompt], d.system_prompt)[0], response)
            replay.append((ids[:n], ids[n:]))
    return Prompts(train, [encode(p) for p in train], held_out, [encode(p) for p in held_out], encode, directions,
                   replay)


def prepare_run_dir(cfg: DictConfig) -> tuple[Path, int]:
    """Create or reopen the run directory; returns it and the last complete iteration."""
    from selfplay.checkpoint import atomic_write_text, clean_incomplete, last_complete_iteration, read_metrics

    run_dir = Path(cfg.run.dir).expanduser().resolve()
    saved = run_dir / "config.yaml"
    if not cfg.run.resume:
        if saved.exists() or read_metrics(run_dir):
            raise RunError(f"{run_dir} already holds a run; pass run.resume=true to continue it, or choose another run.dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, to_yaml(cfg))
        return run_dir, 0
    if not saved.exists():
        raise RunError(f"run.resume=true but {saved} does not exist: nothing to resume")
    before = OmegaConf.load(saved)
    differing = [k for k in ("policy", "data", "generator", "scorer", "algo", "train", "eval", "directions", "world")
                 if OmegaConf.to_container(before[k]) != OmegaConf.to_container(cfg[k])]
    differing += ["run.seed"] * (before.run.seed != cfg.run.seed)
    if differing:
        raise RunError(f"run.resume=true with settings that differ from {saved}: {', '.join(differing)}")
    last = last_complete_iteration(run_dir)
    for p in clean_incomplete(run_dir, last):
        log.info("removed incomplete %s", p)
    atomic_write_text(saved, to_yaml(cfg))
    return run_dir, last


def start_workers(cfg: DictConfig, policy: str, tokenizer: str):
    import ray

    from actors.generator import Generator
    from actors.learner import Learner
    from actors.scorer import Scorer
    from selfplay.loop import Workers

    threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}  # num_cpus=0 actors would get 1 thread
    g, s, t = cfg.generator, cfg.scorer, cfg.train
    generators = [
        Generator.options(num_cpus=g.num_cpus, num_gpus=g.num_gpus, runtime_env={"env_vars": threads}).remote(
            g.backend, policy, tokenizer, g, cfg.policy.dtype, cfg.run.seed)
        for _ in range(g.replicas)
    ]
    device = "cuda" if s.num_gpus > 0 else "cpu"
    scorer = Scorer.options(num_cpus=s.num_cpus, num_gpus=s.num_gpus, runtime_env={"env_vars": threads}).remote(
        s.kind, s.model, s.batch_size, s.k, s.tau, s.tokenizer, device)
    learner = Learner.options(num_cpus=t.num_cpus, num_gpus=t.num_gpus, runtime_env={"env_vars": threads}).remote(
        policy, tokenizer, cfg.policy.dtype, t, cfg.algo, cfg.run.seed, cfg.policy.model)
    workers = Workers(generators, scorer, learner)
    try:
        ray.get([a.__ray_ready__.remote() for a in workers.actors()])  # surface start-up errors now
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers) -> None:
    import ray

    for actor in workers.actors():
        ray.kill(actor)


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    import ray

    from selfplay.checkpoint import iteration_dir
    from selfplay.data import DataError
    from selfplay.directions import DirectionError
    from selfplay.loop import selfplay
    from selfplay.modeling import ModelLoadError, load_tokenizer

    try:
        oracle = resolve_sources(cfg)
        steering = load_steering(cfg)
        resolve_policy(cfg, steering)
        tokenizer = load_tokenizer(cfg.policy.tokenizer)
        prompts = load_prompt_splits(cfg, tokenizer, steering)
        run_dir, last = prepare_run_dir(cfg)
    except (RunError, DataError, ModelLoadError, ConfigError, DirectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if last >= cfg.iter:
        print(f"{run_dir}: all {cfg.iter} iterations are complete")
        return 0
    # A checkpoint carries its tokenizer; the first iteration starts from the configured pair.
    policy = str(iteration_dir(run_dir, last)) if last else cfg.policy.model
    tokenizer_source = policy if last else cfg.policy.tokenizer
    log.info("run dir %s; starting at iteration %d of %d from %s", run_dir, last + 1, cfg.iter, policy)

    owns_ray = not ray.is_initialized()  # a caller's (e.g. a test's) cluster is left running
    if owns_ray:
        ray.init(address=cfg.run.ray_address, include_dashboard=False)
    workers = None
    try:
        workers = start_workers(cfg, policy, tokenizer_source)
        selfplay(cfg, workers, prompts, run_dir, last, oracle, steering)
    finally:
        if owns_ray:
            ray.shutdown()
        elif workers is not None:
            stop_workers(workers)
    print(f"done: {run_dir}/metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
