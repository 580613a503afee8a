"""One generic Ray shell and one generic group, made from a role's declared verbs (its Protocol:
``selfplay.policy.verbs``, ``selfplay.models.preference_scorer.Scoring``), as verl's ``@register`` and
``RayWorkerGroup`` or OpenRLHF's actor-group fan-out: no verb is written out per actor or per group.

``shell(name, Role, build)`` is a Ray actor class whose every declared verb forwards to the object it holds
(``build(spec)``); ``Group(Role, members, names)`` calls a declared verb on every member at once (one ref
each) and waits for them with a bound whose error names the late members.  Adding a verb is declaring it in
the Protocol and implementing it in the library class; the shell and the group follow."""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Callable

import ray

from actors.group import wait_named


@functools.cache
def verbs(role: type) -> dict[str, inspect.Signature | None]:
    """The verbs a Protocol declares, in declaration order (its bases' first): each method's signature (with
    ``self``), None for a declared attribute (which the shell reads by a method of its name).  Read, never
    changed, by its callers (it is computed once per role)."""
    out: dict[str, inspect.Signature | None] = {}
    for cls in reversed(role.__mro__):
        if cls is object or not getattr(cls, "_is_protocol", False) or cls.__name__ in ("Protocol", "Generic"):
            continue
        for name in cls.__dict__.get("__annotations__", {}):
            if not name.startswith("_"):
                out[name] = None
        for name, member in cls.__dict__.items():
            if not name.startswith("_") and inspect.isfunction(member):
                out[name] = inspect.signature(member)
    return out


def forwarder(verb: str, signature: inspect.Signature | None) -> Callable:
    """A method that passes a call of ``verb`` to the held object (``self.held``); for an attribute, reads it."""
    if signature is None:
        def read(self):
            return getattr(self.held, verb)
        method = read
    else:
        def call(self, *args, **kwargs):
            return getattr(self.held, verb)(*args, **kwargs)
        call.__signature__ = signature  # Ray checks a call's arguments against it when it is made
        method = call
    method.__name__ = method.__qualname__ = verb
    method.__doc__ = f"Forwards ``{verb}`` to the held object."
    return method


def preload(modules: tuple[str, ...]) -> None:
    """Import ``modules`` now: a process started ahead of its spec loads its role's libraries meanwhile."""
    for module in modules:
        importlib.import_module(module)


def imported(path: str) -> Callable:
    """The function ``module:name`` names (imported now), or ``path`` itself if it is already one."""
    if callable(path):
        return path
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


class Holder:
    """The base of a shell: builds the object it holds from one spec (``_build``, set by ``shell``: a function
    or its ``module:name``, imported in the actor's process only).  Started without a spec, it imports
    ``imports`` (its role's libraries) at once and builds on ``setup(spec)``: the process loads its code while the
    driver is still checking the run's inputs (``selfplay.loop.startup``)."""

    _build: Callable | str | None = None

    def __init__(self, spec=None, imports: tuple[str, ...] = ()):
        preload(imports)
        self.held = None
        if spec is not None:
            self.setup(spec)

    def setup(self, spec) -> None:
        """Build the held object from ``spec``."""
        self.held = imported(type(self)._build)(spec)


def shell(name: str, role: type, build: Callable | str | None = None, base: type = Holder, module: str = __name__):
    """A Ray actor class ``name`` holding ``build(spec)`` (``build``: a function, or ``module:name`` to import it
    only where it runs) and forwarding each of ``role``'s verbs to it; ``base`` may bring a role's own methods
    (they are kept, not forwarded) and its own ``__init__``."""
    namespace = {verb: forwarder(verb, signature) for verb, signature in verbs(role).items()
                 if not hasattr(base, verb)}
    if build is not None:
        namespace["_build"] = staticmethod(build)
    namespace.update(__module__=module, __qualname__=name, __doc__=f"Ray shell of a {role.__name__}: "
                     f"{', '.join(verbs(role))} forwarded to the object it holds.")
    return ray.remote(type(name, (base,), namespace))


class Group:
    """Actors of one role called as one: ``group.<verb>(...)`` sends the call to every member and returns their
    refs in order (only a declared verb: another name is an AttributeError naming the role and its verbs);
    ``group.wait(refs, timeout_s, what)`` their values, bounded, naming the members late (``names``)."""

    def __init__(self, role: type, members: list, names: list[str]):
        self.role, self.members, self.names = role, members, names

    def __getattr__(self, verb: str):
        if verb.startswith("__") or verb in ("role", "members", "names"):
            raise AttributeError(verb)
        if verb not in verbs(self.role):
            raise AttributeError(f"{self.role.__name__} declares no verb '{verb}' (its verbs: "
                                 f"{', '.join(verbs(self.role))})")
        return lambda *args, **kwargs: [getattr(m, verb).remote(*args, **kwargs) for m in self.members]

    def each(self, verb: str, arguments: list[tuple]) -> list:
        """Member i called with ``arguments[i]``: one ref each."""
        getattr(self, verb)  # refused if undeclared
        return [getattr(m, verb).remote(*args) for m, args in zip(self.members, arguments, strict=True)]

    def wait(self, refs: list, timeout_s: float | None, what: str) -> list:
        """The values of one ref per member (in order), bounded by ``timeout_s``; a StageTimeout names ``what``
        and the members that did not answer."""
        return wait_named(refs, self.names, timeout_s, what)

    def only(self, chosen: list[int] | None) -> Group:
        """The members ``chosen`` (all if None), with their names."""
        if chosen is None:
            return self
        return Group(self.role, [self.members[i] for i in chosen], [self.names[i] for i in chosen])
