"""The cyclic-preference benchmark ([GPM] table 1): its datasets' structure, and GPM vs BT on several instances."""

from __future__ import annotations

from collections import Counter

import pytest
from transformers import AutoTokenizer

from selfplay.data.pairs import PreferencePair, load_pairs
from selfplay.world import cyclic, oracle


def edge_counts(pairs: list[PreferencePair]) -> Counter:
    return Counter((cyclic.response_class(p.chosen), cyclic.response_class(p.rejected)) for p in pairs)


@pytest.mark.parametrize("name", [d for d in cyclic.DATASETS if d != "tone"])
def test_attribute_datasets_are_balanced_three_cycles(name):
    omitted = name[len("no_"):]
    kept = [a for a in cyclic.ATTRIBUTES if a != omitted]
    pairs = cyclic.make_dataset(name, 90, seed=0)
    # [GPM]'s cycle order with one attribute left out, closed back to its start
    assert edge_counts(pairs) == {(kept[0], kept[1]): 30, (kept[1], kept[2]): 30, (kept[2], kept[0]): 30}
    assert cyclic.best_transitive_accuracy(pairs) == pytest.approx(2 / 3)


def test_tone_dataset_is_the_oracles_cycle():
    pairs = cyclic.make_dataset("tone", 60, seed=1)
    assert edge_counts(pairs) == {("sure", "well"): 20, ("well", "hmm"): 20, ("hmm", "sure"): 20}
    for p in pairs:
        prompt = p.prompt[-1]["content"]
        logit = oracle.preference_logit(oracle.judge(prompt, p.chosen), oracle.judge(prompt, p.rejected))
        assert logit > 0, p


def test_pairs_differ_only_in_the_class_word():
    for name in ("no_honesty", "tone"):
        for p in cyclic.make_dataset(name, 30, seed=2):
            a, b = p.chosen.rstrip(".").split(), p.rejected.rstrip(".").split()
            assert len(a) == len(b)
            diff = [(x, y) for x, y in zip(a, b) if x != y]
            assert len(diff) == 1
            assert diff[0] == (cyclic.class_word(cyclic.response_class(p.chosen)),
                               cyclic.class_word(cyclic.response_class(p.rejected)))


def test_split_is_deterministic_disjoint_and_prefix_stable():
    train, test = cyclic.make_split("no_truthfulness", "small", seed=3)
    assert (len(train), len(test)) == (cyclic.SIZES["small"], cyclic.TEST_PAIRS)
    assert (train, test) == cyclic.make_split("no_truthfulness", "small", seed=3)
    assert train != cyclic.make_split("no_truthfulness", "small", seed=4)[0]
    body = lambda r: tuple(w for w in r.rstrip(".").split() if w not in cyclic.MARKERS.values())
    assert not {body(p.chosen) for p in train} & {body(p.chosen) for p in test}
    assert sorted(map(repr, cyclic.make_dataset("no_truthfulness", cyclic.SIZES["small"], seed=3))) == sorted(
        map(repr, train))


def test_best_transitive_accuracy_by_hand():
    m = cyclic.MARKERS
    pair = lambda w, l: PreferencePair([{"role": "user", "content": "q"}], f"a {m[w]}.", f"a {m[l]}.")
    h, t, i = "honesty", "truthfulness", "instruction_following"
    assert cyclic.best_transitive_accuracy([pair(h, t), pair(t, i), pair(h, i)]) == 1.0
    # 2 x (h > t), 1 x (t > i), 1 x (i > h): the best order h > t > i gets 3 of 4
    assert cyclic.best_transitive_accuracy([pair(h, t), pair(h, t), pair(t, i), pair(i, h)]) == 0.75
    with pytest.raises(ValueError, match="at least one pair"):
        cyclic.best_transitive_accuracy([])


def test_bad_names_and_ambiguous_responses_are_refused():
    with pytest.raises(ValueError, match="unknown cyclic dataset 'no_style'"):
        cyclic.make_dataset("no_style", 10, seed=0)
    with pytest.raises(ValueError, match="unknown cyclic size 'huge'"):
        cyclic.make_split("tone", "huge", seed=0)
    with pytest.raises(ValueError, match="2 class markers"):
        cyclic.response_class("bread okay really.")


def test_written_datasets_load_as_trl_pairs(tmp_path):
    cyclic.write_datasets(tmp_path, "small", seed=0, names=("no_honesty", "tone"))
    train, bad = load_pairs(str(tmp_path / "tone" / "train.jsonl"))
    assert bad == [] and train == cyclic.make_split("tone", "small", seed=0)[0]
    both, _ = load_pairs(str(tmp_path / "all" / "test.jsonl"))
    assert Counter(p.subset for p in both) == {"no_honesty": cyclic.TEST_PAIRS, "tone": cyclic.TEST_PAIRS}


# One GPM fit per small instance (two on no_helpfulness, whose seeds 0 and 4 stalled at lr 1e-3) and two per
# larger size, k = 2..4, with and without the gate, over seeds 0-4.  They are where fits stayed at the saddle
# before the head was oriented and the gate started uniform: no_truthfulness medium k = 3 + gate seed 2 for
# 300 steps at 32 pairs a step; no_honesty large k = 4 seed 0 for all 150 steps at 64 (its block began
# backwards), no_instruction_following large k = 3 + gate seed 0 until step 110 (oriented, random gate).
# bench/cyclic.py's table (docs/benchmarks.md, "The cyclic benchmark") has every cell >= 0.95 on all five seeds on this
# machine kind; see there for the minimum.
GPM_CASES = [("tone", "small", 0, 2, False), ("no_instruction_following", "small", 1, 2, True),
             ("no_honesty", "small", 2, 3, False), ("no_truthfulness", "small", 3, 3, True),
             ("no_helpfulness", "small", 4, 4, True), ("no_helpfulness", "small", 0, 2, False),
             ("no_instruction_following", "medium", 1, 4, True), ("no_truthfulness", "medium", 2, 3, True),
             ("no_honesty", "large", 0, 4, False), ("no_instruction_following", "large", 0, 3, True)]


@pytest.mark.slow  # a GPM fit each: 10-60 s
@pytest.mark.parametrize(("name", "size", "seed", "k", "gate"), GPM_CASES)
def test_gpm_learns_the_cycle(world, name, size, seed, k, gate):
    """Seed 004's claim, the GPM side: held-out accuracy >= 0.95 on a 3-cycle no ranking gets above 2/3 of."""
    tokenizer = AutoTokenizer.from_pretrained(world.tokenizer)
    train, test = cyclic.make_split(name, size, seed)
    gpm = cyclic.fit("gpm", train, test, world.policy, tokenizer, k=k, gate=gate, seed=seed)
    assert gpm["accuracy"] >= 0.95, gpm


@pytest.mark.slow  # a BT fit each: 20-40 s
@pytest.mark.parametrize(("name", "seed"), [("no_helpfulness", 0), ("tone", 1)])
def test_bt_cannot_learn_the_cycle(world, name, seed):
    """The BT side, same backbone and budget: held-out accuracy <= 0.70 (a ranking gets at most 2/3)."""
    tokenizer = AutoTokenizer.from_pretrained(world.tokenizer)
    train, test = cyclic.make_split(name, "small", seed)
    bt = cyclic.fit("bt", train, test, world.policy, tokenizer, seed=seed)
    assert bt["accuracy"] <= 0.70, bt
