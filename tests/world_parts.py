"""The embedded world's parts that few tests need and that take minutes to train (DPA's steerable warm start,
the multi-objective model and its attribute rows), built in a process of their own from the start of a session
that selects a test marked ``world_parts`` (``tests/conftest.py``), so the other tests run meanwhile.  A test
that needs a part before it is done waits on the part's lock and finds it built
(``selfplay.core.checkpoint.build_once``): nothing is built twice."""

from __future__ import annotations


def build() -> None:
    """The parts a run of the ``dpa`` preset on the embedded world uses, built as that run would build them."""
    from selfplay.config.loading import load_config
    from selfplay.world.build import get_world

    settings = load_config(["dpa"]).world
    world = get_world(settings)
    world.steerable_policy(settings)
    world.scorer("multi_objective", settings)
    world.sft_data(settings)


if __name__ == "__main__":
    build()
