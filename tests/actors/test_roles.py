"""A role's verbs are declared once (its Protocol): the engines implement them with the declared signatures,
the Ray shell forwards every one of them, and the group calls exactly these on every member, naming a late one."""

from __future__ import annotations

import inspect
import time
from typing import Protocol

import pytest

from actors.generator import GenerationWorker, generator_group
from actors.learner import LearnerWorker
from actors.roles import Group, shell, verbs
from actors.scorer import ScoringWorker
from selfplay.models.preference_scorer import Scorer, Scoring
from selfplay.policy.engines import HFGenerator, VLLMGenerator
from selfplay.policy.trainer import PolicyTrainer
from selfplay.policy.verbs import GenerationEngine, Learner, TransferEngine


def methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items() if inspect.isfunction(member)}


@pytest.mark.parametrize(("implementation", "role"), [(VLLMGenerator, TransferEngine), (HFGenerator, GenerationEngine),
                                                      (PolicyTrainer, Learner), (Scorer, Scoring)])
def test_each_library_class_defines_every_declared_verb_with_its_signature(implementation, role):
    declared, defined = verbs(role), methods(implementation)
    for verb, signature in declared.items():
        if signature is None:  # an attribute (engine_starts): set by the constructor
            assert f"self.{verb} = " in inspect.getsource(implementation.__init__), verb
        else:
            assert verb in defined, f"{implementation.__name__} lacks {verb}"
            assert list(defined[verb].parameters.values()) == list(signature.parameters.values()), verb
            assert defined[verb].return_annotation == signature.return_annotation, verb


def test_the_declarations_are_the_roles_verbs():
    """The transfer verbs are vLLM's alone; the engine's attribute is read by a method of its name."""
    assert set(verbs(TransferEngine)) - set(verbs(GenerationEngine)) == {
        "init_weight_transfer_engine", "start_weight_update", "update_weights", "finish_weight_update"}
    assert verbs(GenerationEngine)["engine_starts"] is None
    assert set(verbs(Scoring)) == {"score", "rewards"}
    assert "connect_generators" in verbs(Learner) and "__init__" not in verbs(Learner)


@pytest.mark.parametrize(("worker", "role", "own"), [(GenerationWorker, TransferEngine, {"setup"}),
                                                     (ScoringWorker, Scoring, {"setup"}),
                                                     (LearnerWorker, Learner, {"address", "setup"})])
def test_each_shell_has_exactly_the_declared_verbs_and_its_own(worker, role, own):
    cls = worker.__ray_metadata__.modified_class
    public = {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}
    assert public == set(verbs(role)) | own


def test_an_undeclared_verb_is_refused_naming_the_role_and_its_verbs():
    group = generator_group([object(), object()])
    with pytest.raises(AttributeError, match=r"^TransferEngine declares no verb 'load_weights' \(its verbs: .*"
                                             r"generate, load_bucket, finish_sync"):
        group.load_weights({})
    with pytest.raises(AttributeError, match="declares no verb 'nap'"):
        group.each("nap", [(), ()])
    assert group.names == ["generator 0", "generator 1"] and group.only([1]).names == ["generator 1"]


def test_a_shell_forwards_every_declared_verb_to_the_object_it_holds(ray_cluster):
    import ray

    class Recorder:
        """A stand-in engine that records every call it gets."""

        engine_starts = 3

        def __init__(self, spec):
            self.spec, self.calls = spec, []

        def __getattr__(self, verb):
            if verb.startswith("_"):
                raise AttributeError(verb)
            return lambda *args, **kwargs: self.calls.append((verb, args, kwargs)) or (self.spec, verb)

    Echo = shell("Echo", TransferEngine, Recorder)
    actor = Echo.remote("spec-7")
    calls = {verb: (() if signature is None else tuple(range(len(signature.parameters) - 1)))
             for verb, signature in verbs(TransferEngine).items() if verb != "generate"}
    values = ray.get([getattr(actor, verb).remote(*args) for verb, args in calls.items()])
    generated = ray.get(actor.generate.remote([[1]], 2, 1.0, 1.0, 4, 0, codes="c"))
    recorded = ray.get(actor.__ray_call__.remote(lambda self: self.held.calls))
    assert recorded == [(verb, args, {}) for verb, args in calls.items() if verb != "engine_starts"] + [
        ("generate", ([[1]], 2, 1.0, 1.0, 4, 0), {"codes": "c"})]
    assert values == [3 if verb == "engine_starts" else ("spec-7", verb) for verb in calls]
    assert generated == ("spec-7", "generate")
    with pytest.raises(TypeError, match="missing a required argument: 'level'"):
        actor.sleep.remote()  # the declared signature is checked when the call is made
    ray.kill(actor)
    # started ahead of its spec (importing its role's libraries), then set up: the same object
    early = Echo.remote(None, ("json", "actors.roles"))
    assert ray.get(early.__ray_call__.remote(lambda self: self.held)) is None
    ray.get(early.setup.remote("spec-8"))
    assert ray.get(early.generate.remote([[1]], 2, 1.0, 1.0, 4, 0)) == ("spec-8", "generate")
    ray.kill(early)


def test_a_groups_call_reaches_every_member_and_a_late_member_is_named(ray_cluster):
    import ray

    from actors.group import StageTimeout

    class Napping:
        """A stand-in whose ``nap`` sleeps the member's own number of seconds."""

        def __init__(self, spec):
            self.seconds = spec

        def nap(self, factor: float) -> tuple[float, float]:
            time.sleep(self.seconds * factor)
            return self.seconds, factor

    class Nap(Protocol):
        def nap(self, factor: float) -> tuple[float, float]:
            """Sleep ``factor`` times the member's seconds."""

    Sleeper = shell("Sleeper", Nap, Napping)
    members = [Sleeper.remote(0.0), Sleeper.remote(0.0), Sleeper.remote(600.0)]
    group = Group(Nap, members, ["quick", "also quick", "slow"])
    assert group.wait(group.only([0, 1]).nap(1.0), 30.0, "nap") == [(0.0, 1.0), (0.0, 1.0)]
    assert group.wait(group.only([0, 1]).each("nap", [(1.0,), (2.0,)]), 30.0, "nap") == [(0.0, 1.0), (0.0, 2.0)]
    with pytest.raises(StageTimeout, match=r"^nap: slow did not answer within 2 s$") as caught:
        group.wait(group.nap(1.0), 2.0, "nap")
    assert caught.value.late == ["slow"]
    for m in members:
        ray.kill(m)
