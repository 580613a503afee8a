"""The import rules of docs/architecture.md: each part of the package imports only the parts below it.

Every import counts, the ones inside functions too, so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first.  A module may import from its own part and from the parts listed before it.
LAYERS: list[tuple[str, ...]] = [
    ("selfplay.core",),
    ("selfplay.data",),
    ("selfplay.models",),
    ("selfplay.steering",),
    ("selfplay.algorithms",),
    ("selfplay.policy",),
    ("selfplay.world",),
    ("selfplay.config",),
    ("actors",),
    ("selfplay.loop",),
    ("selfplay.run", "selfplay.train_pm", "selfplay.eval_pm", "selfplay.generate", "selfplay.plan",
     "selfplay.report"),  # entry points
]
# The library proper never touches Ray, the actors or the loop: it runs in a plain process (tests, a notebook).
NO_RAY = ("selfplay.core", "selfplay.data", "selfplay.models", "selfplay.algorithms", "selfplay.steering",
          "selfplay.policy", "selfplay.world", "selfplay.config")
MAX_LINES = 320


def part_of(module: str) -> int | None:
    """The layer index of ``module`` (a dotted name), or None for anything outside selfplay and actors."""
    for i, parts in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in parts):
            return i
    return None


def modules() -> dict[str, Path]:
    out = {}
    for root in ("selfplay", "actors"):
        for path in sorted((REPO / root).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (``from selfplay.x import y`` gives ``selfplay.x.y`` too,
    since y may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = modules()


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m not in ("selfplay",) and part_of(m) is None] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_only_from_lower_layers(name):
    own = part_of(name)
    if own is None:  # the package root
        return
    upward = sorted(m for m in imports(MODULES[name])
                    if (layer := part_of(m)) is not None and layer > own and m.rsplit(".", 1)[0] != "selfplay")
    assert upward == [], f"{name} (layer {LAYERS[own]}) imports from higher layers: {upward}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith(NO_RAY)))
def test_library_never_imports_ray_actors_or_the_loop(name):
    bad = sorted(m for m in imports(MODULES[name])
                 if m.split(".")[0] in ("ray", "actors") or m.startswith("selfplay.loop"))
    assert bad == [], f"{name} imports {bad}"


def test_no_module_is_longer_than_a_few_screens():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_two_modules_differ_only_by_a_suffix():
    """``generate``/``generation``, ``pairs``/``pair_selection``: names that say the same thing twice."""
    leaves = sorted({name.rsplit(".", 1)[-1] for name in MODULES} - {"__init__"})
    clashes = [(a, b) for a in leaves for b in leaves if a != b and b.startswith(a) and len(a) >= 4]
    assert clashes == []


def test_the_rules_catch_a_violation(tmp_path):
    """The checker itself: an upward import inside a function body is found."""
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from selfplay.loop.driver import selfplay\n")
    assert "selfplay.loop.driver" in imports(bad)
    assert part_of("selfplay.loop.driver") > part_of("selfplay.models.gpm")
