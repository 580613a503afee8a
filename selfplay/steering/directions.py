"""Preference directions (DPA, docs/methods.md §3 / [DPA] sec. 2.2): unit vectors v in R^m over the
reward attributes, written into the system prompt.

One module owns a direction's life: ``validate`` (and ``parse`` for the command line),
``sample`` for training ([DPA]: theta ~ Uniform(-pi/4, 0) for m = 2, or a cap of the
sphere for any m), ``grid`` for evaluation, and the system-prompt template of the released
DPA model, ``render``ed and ``read`` back byte for byte:

    You are a helpful, respectful, and honest assistant who always responds to the user in a
    harmless way. Your response should maximize weighted rating = helpfulness*{w1} + verbosity*{w2}

(one line, no trailing period), with integer weights w_i = round(100 v_i), i.e.
round(100 cos theta), round(100 sin theta) for m = 2; a negative weight prints as
``+ verbosity*-26``.  Generation, training, evaluation and ``selfplay.generate`` all use it.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from collections.abc import Sequence

from selfplay.core.lm import Messages

Direction = tuple[float, ...]


TEMPLATE_PREFIX = ("You are a helpful, respectful, and honest assistant who always responds to the user in a "
                   "harmless way. Your response should maximize weighted rating = ")


_TERM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\*(-?\d+)$")


UNIT_TOLERANCE = 1e-3  # |norm - 1| above this is normalised, with a warning


class DirectionError(ValueError):
    """A direction of the wrong length, non-finite, zero, or a system prompt that is not one."""


def _describe(names: Sequence[str]) -> str:
    return f"{len(names)} components ({', '.join(names)})"


def validate(v: Sequence[float], names: Sequence[str]) -> Direction:
    """``v`` as a unit vector over the attributes ``names``.

    Raises DirectionError for a wrong length, a non-finite component or the zero vector;
    a vector that is not unit-length is normalised with a warning.
    """
    v = tuple(float(x) for x in v)
    if len(v) != len(names):
        raise DirectionError(f"a direction here has {_describe(names)}, got {len(v)}: {list(v)}")
    if not all(math.isfinite(x) for x in v):
        raise DirectionError(f"direction components must be finite, got {list(v)}")
    norm = math.sqrt(sum(x * x for x in v))
    if norm == 0:
        raise DirectionError("the zero vector is not a direction: give at least one non-zero weight")
    if abs(norm - 1) > UNIT_TOLERANCE:
        warnings.warn(f"direction {list(v)} has norm {norm:.4g}; normalised to unit length", stacklevel=2)
        v = tuple(x / norm for x in v)
    return v


def parse(text: str, names: Sequence[str]) -> Direction:
    """A direction from comma-separated numbers, e.g. ``"0.8,-0.6"``; errors say how many are expected."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise DirectionError(f"--direction must be {len(names)} comma-separated numbers "
                             f"({','.join(names)}), got {text!r}") from None
    return validate(values, names)


def weights(v: Sequence[float]) -> list[int]:
    """The template's integer weights: round(100 v_i)."""
    return [int(round(100 * x)) for x in v]


def render(v: Sequence[float], names: Sequence[str]) -> str:
    """The system prompt that asks for direction ``v`` (docs/methods.md §3's template, exactly)."""
    if len(v) != len(names):
        raise DirectionError(f"a direction here has {_describe(names)}, got {len(v)}")
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise DirectionError(f"attribute name {name!r} cannot appear in the template (letters, digits, _)")
    return TEMPLATE_PREFIX + " + ".join(f"{n}*{w}" for n, w in zip(names, weights(v)))


def read(system_prompt: str) -> tuple[list[str], Direction]:
    """The attribute names and direction (w_i / 100) of a system prompt ``render`` wrote.

    ``render(v, names) == system_prompt`` for the returned pair, byte for byte; anything
    else raises DirectionError.
    """
    if not system_prompt.startswith(TEMPLATE_PREFIX):
        raise DirectionError("not a direction system prompt: it does not start with the DPA template")
    names, values = [], []
    for term in system_prompt[len(TEMPLATE_PREFIX):].split(" + "):
        m = _TERM.match(term)
        if m is None:
            raise DirectionError(f"not a direction system prompt: bad term {term!r} (expected name*weight)")
        names.append(m.group(1))
        values.append(int(m.group(2)) / 100)
    v = tuple(values)
    if render(v, names) != system_prompt:  # e.g. "+07" or extra spaces: not something render writes
        raise DirectionError("not a direction system prompt as rendered by selfplay (non-canonical weights)")
    return names, v


def condition(messages: Messages, v: Sequence[float], names: Sequence[str]) -> Messages:
    """``messages`` with the direction's system prompt (replacing a leading system message, if any)."""
    rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
    return [{"role": "system", "content": render(v, names)}, *rest]


def strip(messages: Messages) -> Messages:
    """``messages`` without a leading direction system prompt: what a reward model scores, r(x, y)."""
    if messages and messages[0]["role"] == "system" and messages[0]["content"].startswith(TEMPLATE_PREFIX):
        return list(messages[1:])
    return list(messages)


def from_angle(degrees: float) -> Direction:
    """<cos theta, sin theta> (m = 2)."""
    t = math.radians(degrees)
    return (math.cos(t), math.sin(t))


def grid(size: int, start: float, end: float) -> list[Direction]:
    """``size`` directions with angles evenly from ``start`` to ``end`` degrees (m = 2);
    [DPA] fig. 4: 10 from <1, 0> (0) to <sqrt2/2, sqrt2/2> (45)."""
    if size < 1:
        raise DirectionError(f"a direction grid needs at least one direction, got size {size}")
    if size == 1:
        return [from_angle(start)]
    return [from_angle(start + (end - start) * i / (size - 1)) for i in range(size)]


def sample_angle(rng: random.Random, low: float, high: float) -> Direction:
    """theta ~ Uniform(low, high) degrees, v = <cos theta, sin theta> ([DPA]: Uniform(-45, 0))."""
    return from_angle(rng.uniform(low, high))


def sample_cap(rng: random.Random, center: Sequence[float], max_angle: float) -> Direction:
    """Uniform over the unit vectors within ``max_angle`` degrees of ``center`` (non-zero, any m >= 2).

    The angle alpha to the centre has density proportional to sin(alpha)^(m-2) on the sphere
    (drawn by rejection), the remaining direction is uniform on the centre's orthogonal complement.
    """
    norm = math.sqrt(sum(x * x for x in center))
    c = [x / norm for x in center]
    m, limit = len(c), math.radians(max_angle)
    peak = math.sin(min(limit, math.pi / 2)) ** (m - 2)
    while True:
        alpha = rng.uniform(0.0, limit)
        if m == 2 or rng.random() * peak <= math.sin(alpha) ** (m - 2):
            break
    while True:  # a random unit vector orthogonal to c
        g = [rng.gauss(0.0, 1.0) for _ in range(m)]
        dot = sum(a * b for a, b in zip(g, c))
        u = [a - dot * b for a, b in zip(g, c)]
        norm = math.sqrt(sum(x * x for x in u))
        if norm > 1e-9:
            break
    return tuple(math.cos(alpha) * a + math.sin(alpha) * b / norm for a, b in zip(c, u))


def angle_to(v: Sequence[float], center: Sequence[float]) -> float:
    """The angle in degrees between unit vectors v and center."""
    dot = sum(a * b for a, b in zip(v, center))
    return math.degrees(math.acos(max(-1.0, min(1.0, dot))))


def scalarise(rewards, v: Sequence[float]):
    """R(x, v, y) = v^T r(x, y) for rewards (..., m) -> (...)."""
    import torch

    return rewards @ torch.tensor(v, dtype=rewards.dtype)


def sampler(cfg, names: Sequence[str]):
    """The training distribution of ``cfg`` (the ``directions`` section): rng -> direction.

    ``fixed``: always that direction; ``center``: the cap of ``max_angle`` degrees around it;
    otherwise (m = 2 only) theta ~ Uniform(``angles``).
    """
    if cfg.fixed is not None:
        v = validate(cfg.fixed, names)
        return lambda rng: v
    if cfg.center is not None:
        c = validate(cfg.center, names)
        return lambda rng: sample_cap(rng, c, cfg.max_angle)
    if len(names) != 2:
        raise DirectionError(f"directions.angles describes m = 2 directions, but the reward model has "
                             f"{_describe(names)}: set directions.center (and directions.max_angle) or directions.fixed")
    low, high = cfg.angles
    return lambda rng: sample_angle(rng, low, high)


def evaluation_grid(cfg, names: Sequence[str]) -> list[Direction]:
    """The evaluation directions of ``cfg``: the explicit ``grid``, or ``grid_size`` angles over ``grid_angles``."""
    if cfg.grid is not None:
        return [validate(v, names) for v in cfg.grid]
    if len(names) != 2:
        raise DirectionError(f"directions.grid_angles describes m = 2 directions, but the reward model has "
                             f"{_describe(names)}: list the evaluation directions in directions.grid")
    return grid(cfg.grid_size, *cfg.grid_angles)
