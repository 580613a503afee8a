"""The algorithms, one unit per module of this package (``selfplay.algorithms.<name>``, its ``UNIT``), found by
name; the checks every unit shares.  The loop, the learner and the loader look a unit up and ask it; none of
them branches on a name.

| algo  | examples                                       | loss                           | reference      |
|-------|------------------------------------------------|--------------------------------|----------------|
| gpo   | all K responses, or the A.2 pair (``pairs``)   | square, target s_hat / beta    | pi_t           |
| sppo  | all K responses, or the A.2 pair (``pairs``)   | square, target eta (P_hat-1/2) | pi_t           |
| dpo   | (chosen, rejected) by a pair strategy          | -log sigma(beta (h_w - h_l))   | pi_0 or pi_t   |
| ipo   | (chosen, rejected) by a pair strategy          | (h_w - h_l - 1/(2 tau))^2      | pi_0 or pi_t   |
| simpo | (chosen, rejected) by a pair strategy          | length-normalised, margin gamma| none           |
| dpa   | per (prompt, v): argmax_i v^T r_i, + replay    | SFT next-token loss            | none           |

and whatever other units the package holds (``python -m selfplay.run --help`` lists them all).  With
``algo.lpc.codes`` > 0 the unit is wrapped by LPC (``selfplay.algorithms.latent``).
"""

from __future__ import annotations

import importlib
import pkgutil
import typing

from omegaconf import DictConfig

import selfplay.algorithms as package
from selfplay.algorithms import latent
from selfplay.algorithms.unit import SHARED_KEYS, Algorithm


def discover() -> dict[str, Algorithm]:
    """Every module of this package that defines ``UNIT``, by the unit's name, in module order."""
    units = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        unit = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "UNIT", None)
        if isinstance(unit, Algorithm):
            units[unit.name] = unit
    return units


ALGORITHMS: dict[str, Algorithm] = discover()
HYPERPARAMETERS = tuple(dict.fromkeys(k for a in ALGORITHMS.values() for k in a.params))  # algo keys some own
CODABLE = [name for name, a in ALGORITHMS.items() if a.codable]  # the units LPC may wrap


def key_types() -> dict[str, type]:
    """Each ``algo`` key some unit declares (its hyperparameters, then ``pairs`` and ``reference``) -> its type;
    a key two units declare has one type."""
    types: dict[str, type] = {}
    for a in ALGORITHMS.values():
        for key, typ in typing.get_type_hints(a.config).items():
            if types.setdefault(key, typ) != typ:
                raise TypeError(f"algo.{key} is {types[key]} in one algorithm, {typ} in {a.name}")
    return {k: types[k] for k in (*HYPERPARAMETERS, *SHARED_KEYS)}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo.name '{name}' (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]


def resolve(cfg: DictConfig) -> Algorithm:
    """The unit that trains with the ``algo`` section ``cfg``: its algorithm, wrapped by LPC when it is on."""
    algo = get_algorithm(cfg.name)
    return latent.wrap(algo) if cfg.lpc.codes else algo


def check_algo(cfg: DictConfig) -> None:
    """Check ``cfg`` (the ``algo`` section, its unset keys already its algorithm's defaults) against its algorithm.

    Raises ValueError naming the key at fault: a hyperparameter another algorithm owns, a pair strategy or
    reference the algorithm does not know, a margin filter that can never keep a pair, then what the unit
    itself and LPC refuse.  Writes nothing.
    """
    algo = get_algorithm(cfg.name)
    for key in HYPERPARAMETERS:
        if key not in algo.params and cfg[key] is not None:
            owners = [n for n, a in ALGORITHMS.items() if key in a.params]
            raise ValueError(f"algo.{key} applies to {'/'.join(owners)}, not to algo.name={cfg.name}")
        if key in algo.params and cfg[key] is None:
            raise ValueError(f"algo.{key} must be set for {cfg.name}")
    if cfg.pairs not in algo.pairs:
        raise ValueError(f"algo.pairs='{cfg.pairs}' is not a pair strategy of {cfg.name}; it takes {algo.pairs}")
    if algo.reference_free:
        if cfg.reference is not None:
            raise ValueError(f"{cfg.name} uses no reference model; remove algo.reference={cfg.reference}")
    elif cfg.reference not in algo.references:
        raise ValueError(f"algo.reference='{cfg.reference}' is not available to {cfg.name}; "
                         f"it takes {algo.references}")
    if not 0.0 <= cfg.min_prob <= 1.0:
        raise ValueError(f"algo.min_prob is a probability in [0, 1], got {cfg.min_prob}"
                         + (": no pair could pass the margin filter" if cfg.min_prob > 1 else ""))
    if cfg.min_prob > 0 and algo.on_policy:
        raise ValueError(f"algo.min_prob filters preference pairs; {cfg.name} trains on every response or on "
                         "A.2's (best, worst) pair unfiltered")
    if cfg.max_pairs < 1:
        raise ValueError(f"algo.max_pairs must be >= 1, got {cfg.max_pairs}")
    for problem in algo.refuse(cfg) + latent.refuse(cfg, algo, CODABLE):
        raise ValueError(problem)
