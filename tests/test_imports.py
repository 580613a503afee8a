"""Every module of the library and of the actors imports (no syntax errors, no missing names)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import actors
import selfplay


def all_modules() -> list[str]:
    names = []
    for pkg in (selfplay, actors):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return names


MODULES = all_modules()


def test_walk_finds_the_core_modules():
    for name in ["selfplay.algorithms.losses", "selfplay.algorithms.registry", "selfplay.models.gpm",
                 "selfplay.world.oracle", "selfplay.config.schema", "selfplay.run", "selfplay.loop.driver",
                 "actors.generator", "actors.scorer"]:
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    mod = importlib.import_module(name)
    assert mod.__name__ == name
