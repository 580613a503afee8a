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


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module in ``graph`` (module -> modules it imports):
    each is an import cycle (Tarjan's algorithm, iteratively)."""
    index, low, on, stack, cycles, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycles():
    """No two modules import each other, directly or through others (lazy imports count)."""
    graph = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_two_modules_share_a_file_name():
    """``selfplay/plan.py`` beside ``loop/plan.py``, ``actors/learner.Learner`` beside ``policy/learner.Learner``: one
    name for two things.  The entry points are named for their commands and stand aside."""
    entry_points = set(LAYERS[-1])
    by_name: dict[str, list[str]] = {}
    for m in MODULES:
        if m not in entry_points and "." in m:
            by_name.setdefault(m.rsplit(".", 1)[-1], []).append(m)
    assert {name: ms for name, ms in by_name.items() if len(ms) > 1} == {}
