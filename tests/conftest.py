"""Session-wide fixtures: one embedded world and one Ray cluster for the whole suite."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def world():
    """The default embedded world (built once per machine, then cached)."""
    from omegaconf import OmegaConf

    from selfplay.config import WorldConfig
    from selfplay.world.build import get_world

    return get_world(OmegaConf.structured(WorldConfig))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    # address="local": always a fresh cluster, never a developer's running head
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
