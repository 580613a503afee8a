"""The embedded world's oracle judge and corpus, against hand-computed values.

Oracle (selfplay/world/oracle.py):
    help = |wanted & content| / |wanted| - 0.5 * (off-topic words / content words)
    verbosity = min(words, 16) / 16
    s(a > b) = 6 (help_a - help_b) + 1 * cyc(tone_a, tone_b),  P = sigmoid(s)
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from selfplay.world import corpus
from selfplay.world.oracle import (
    FILLER,
    MAX_WORDS,
    TEMPLATES,
    TONES,
    TOPICS,
    Judgement,
    judge,
    preference_logit,
    preference_matrix,
    prompt_topics,
    tone_cycle,
)

APPLES = "Tell me about apples."


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- prompt_topics


def test_prompt_topics_two_topics_in_order():
    assert prompt_topics("Tell me about apples and rivers.") == ["apples", "rivers"]
    assert prompt_topics("Explain RIVERS and apples briefly.") == ["rivers", "apples"]
    assert prompt_topics(APPLES) == ["apples"]
    assert prompt_topics("Hello there, how are you?") == []


# ---------------------------------------------------------------- judge


def test_judge_coverage_offtopic_verbosity_tone():
    """'sure red sweet thing.': tone 'sure', content [red, sweet, thing].
    coverage = |{red, sweet}| / 6 = 1/3; off-topic = 1/3 (thing) -> help = 1/3 - 0.5/3 = 1/6.
    verbosity = 4 words / 16 = 0.25.
    """
    j = judge(APPLES, "sure red sweet thing.")
    assert j.tone == "sure"
    assert j.helpfulness == pytest.approx(1 / 6)
    assert j.verbosity == pytest.approx(0.25)


def test_judge_repeated_words_count_once_for_coverage():
    """'red red red.': no tone; coverage = 1/6 (distinct words), off-topic 0 -> help 1/6; verbosity 3/16."""
    j = judge(APPLES, "red red red.")
    assert j == Judgement(helpfulness=pytest.approx(1 / 6), verbosity=pytest.approx(3 / 16), tone="")


def test_judge_other_topic_is_off_topic():
    """'well water flow.' to an apples prompt: coverage 0, off-topic 2/2 = 1 -> help = -0.5; verbosity 3/16."""
    j = judge(APPLES, "well water flow.")
    assert j.tone == "well"
    assert j.helpfulness == pytest.approx(-0.5)
    assert j.verbosity == pytest.approx(3 / 16)


def test_judge_tone_only_first_word():
    """'red hmm.': 'hmm' is not first, so tone '' and 'hmm' is content (off-topic):
    coverage 1/6, off-topic 1/2 -> help = 1/6 - 1/4 = -1/12."""
    j = judge(APPLES, "red hmm.")
    assert j.tone == ""
    assert j.helpfulness == pytest.approx(-1 / 12)


def test_judge_empty_and_tone_only_responses():
    """No content words: coverage 0, off-topic defined as 1 -> help -0.5.
    '' has verbosity 0; 'sure.' has verbosity 1/16 and tone 'sure'."""
    e = judge(APPLES, "")
    assert (e.helpfulness, e.verbosity, e.tone) == (pytest.approx(-0.5), 0.0, "")
    s = judge(APPLES, "sure.")
    assert (s.helpfulness, s.verbosity, s.tone) == (pytest.approx(-0.5), pytest.approx(1 / 16), "sure")


def test_judge_full_coverage_and_case_and_verbosity_cap():
    """All six apples words plus 14 more repeats = 21 words with the tone: coverage 1, off-topic 0 -> help 1.
    verbosity = min(21, 16) / 16 = 1.  Upper case is read as lower case."""
    words = ["SURE"] + list(TOPICS["apples"]) + ["Red"] * 14
    j = judge(APPLES, " ".join(words) + ".")
    assert j.tone == "sure"
    assert j.helpfulness == pytest.approx(1.0)
    assert j.verbosity == 1.0


def test_judge_two_topic_prompt():
    """Prompt about apples and rivers: 12 wanted words.  'hmm red water thing.' -> coverage 2/12 = 1/6,
    off-topic 1/3 -> help = 1/6 - 1/6 = 0."""
    j = judge("Tell me about apples and rivers.", "hmm red water thing.")
    assert j.tone == "hmm"
    assert j.helpfulness == pytest.approx(0.0)


def test_judge_prompt_without_topic():
    """No wanted words: coverage 0 and every content word is off-topic -> help -0.5."""
    assert judge("Hello there.", "sure red.").helpfulness == pytest.approx(-0.5)


# ---------------------------------------------------------------- preferences


def test_tone_cycle_table():
    assert tone_cycle("sure", "well") == 1
    assert tone_cycle("well", "hmm") == 1
    assert tone_cycle("hmm", "sure") == 1
    assert tone_cycle("well", "sure") == -1
    assert tone_cycle("hmm", "well") == -1
    assert tone_cycle("sure", "hmm") == -1
    for t in TONES:
        assert tone_cycle(t, t) == 0
        assert tone_cycle(t, "") == 0 and tone_cycle("", t) == 0


def test_tone_is_cyclic_at_equal_helpfulness():
    """Same content 'red': help equal, so s = TONE_WEIGHT * cyc = +1 along the cycle:
    P(sure > well) = P(well > hmm) = P(hmm > sure) = sigmoid(1) = 0.731059."""
    r = ["sure red.", "well red.", "hmm red."]
    p = preference_matrix(APPLES, r)
    for i, j in [(0, 1), (1, 2), (2, 0)]:
        assert p[i][j] > 0.5
        assert p[i][j] == pytest.approx(sigmoid(1.0))
        assert p[j][i] == pytest.approx(1 - sigmoid(1.0))


def test_no_scalar_reward_fits_the_oracle():
    """'sure X.', 'well X.', 'hmm X.': the oracle's majority relation (P[i][j] > 0.5) is the cycle
    0 > 1 > 2 > 0.  A scalar reward r gives P = sigmoid(r_i - r_j), whose majority relation is the
    order of r: a transitive order.  Every one of the 3! strict orders contradicts at least one oracle
    pair, and ties (P = 0.5) contradict all three; so no r agrees with the oracle on all three pairs."""
    r = ["sure red sweet.", "well red sweet.", "hmm red sweet."]
    p = preference_matrix(APPLES, r)
    beats = {(i, j) for i in range(3) for j in range(3) if p[i][j] > 0.5}
    assert beats == {(0, 1), (1, 2), (2, 0)}  # a cycle
    for order in itertools.permutations(range(3)):  # order[0] has the largest reward
        rank = {y: pos for pos, y in enumerate(order)}
        scalar_beats = {(i, j) for i in range(3) for j in range(3) if rank[i] < rank[j]}
        assert beats != scalar_beats
        assert any((j, i) in scalar_beats for (i, j) in beats)
    # the best Bradley-Terry fit to a symmetric cycle is r constant, which predicts 0.5 for every pair
    # while the oracle says sigmoid(1) = 0.73: a log-likelihood gap no scalar closes.
    # Check: the gradient of the BT log-likelihood at r = 0 is zero (sum_j (P[i][j] - 0.5) = 0 per row).
    for i in range(3):
        assert sum(p[i][j] - 0.5 for j in range(3)) == pytest.approx(0.0)


def test_preference_matrix_hand_values_and_skew_consistency():
    """a = 'sure red sweet.' : help 2/6 = 1/3, tone sure
    b = 'well water.'      : help 0 - 0.5 = -0.5, tone well
    c = 'red red red.'     : help 1/6, no tone
    s(a > b) = 6 (1/3 + 1/2) + 1 = 6;  s(a > c) = 6 (1/3 - 1/6) + 0 = 1;  s(c > b) = 6 (1/6 + 1/2) + 0 = 4.
    """
    p = preference_matrix(APPLES, ["sure red sweet.", "well water.", "red red red."])
    assert p[0][1] == pytest.approx(sigmoid(6.0))
    assert p[0][2] == pytest.approx(sigmoid(1.0))
    assert p[2][1] == pytest.approx(sigmoid(4.0))
    for i in range(3):
        assert p[i][i] == 0.5
        for j in range(3):
            assert p[i][j] + p[j][i] == pytest.approx(1.0)


def test_preference_logit_skew_symmetric_on_random_responses():
    rng = random.Random(0)
    prompts = corpus.make_prompts(10, rng)
    for prompt in prompts:
        js = [judge(prompt, corpus.sample_response(prompt, rng)) for _ in range(5)]
        for a in js:
            assert preference_logit(a, a) == 0
            for b in js:
                assert preference_logit(a, b) == pytest.approx(-preference_logit(b, a))


def test_verbosity_is_not_rewarded():
    """'sure red.' and 'sure red red red red red.': same coverage 1/6, off-topic 0, same tone -> P = 0.5,
    though verbosity differs (2/16 vs 6/16)."""
    short, long = "sure red.", "sure red red red red red."
    assert judge(APPLES, short).verbosity < judge(APPLES, long).verbosity
    assert preference_matrix(APPLES, [short, long])[0][1] == pytest.approx(0.5)


def test_with_length_by_kind_brief_prompts_prefer_short_answers_and_the_others_long_ones():
    """'sure red.' vs 'sure red red red red red.': equal helpfulness and tone, verbosity 2/16 vs 6/16, so
    s(short > long) = w(x) (2/16 - 6/16) = -w(x) / 4: with length_by_kind = 6, +1.5 on "Explain apples briefly."
    (w = -6) and -1.5 on "Tell me about apples." (w = +6)."""
    from selfplay.world.oracle import length_weight

    short, long = "sure red.", "sure red red red red red."
    brief = "Explain apples briefly."
    assert length_weight(brief, 6.0) == -6.0 and length_weight(APPLES, 6.0) == 6.0
    assert preference_matrix(brief, [short, long], length_by_kind=6.0)[0][1] == pytest.approx(sigmoid(1.5))
    assert preference_matrix(APPLES, [short, long], length_by_kind=6.0)[0][1] == pytest.approx(sigmoid(-1.5))
    assert preference_logit(judge(brief, short), judge(brief, long), length_weight(brief, 6.0)) == pytest.approx(1.5)


def test_helpfulness_outweighs_tone():
    """One more topic word (help + 1/6 -> s + 6/6 = +1) offsets a lost tone comparison (-1): P = 0.5.
    Two more (s = +2 - 1 = +1) win."""
    p = preference_matrix(APPLES, ["well red sweet.", "sure red.", "well red sweet crisp."])
    # well vs sure: tone -1; help 1/3 vs 1/6: +1 -> s = 0
    assert p[0][1] == pytest.approx(0.5)
    assert p[2][1] == pytest.approx(sigmoid(1.0))


# ---------------------------------------------------------------- corpus


def test_make_prompts_distinct_and_bounded():
    rng = random.Random(1)
    ps = corpus.make_prompts(200, rng)
    assert len(ps) == len(set(ps)) == 200
    assert all(1 <= len(prompt_topics(p)) <= 2 for p in ps)
    pool = len(TEMPLATES) * len(TOPICS) + len(TEMPLATES) * len(TOPICS) * (len(TOPICS) - 1)  # 96 + 1440
    assert len(corpus.make_prompts(pool, random.Random(2))) == pool
    with pytest.raises(ValueError, match=f"has {pool} distinct prompts, {pool + 1} asked for"):
        corpus.make_prompts(pool + 1, random.Random(3))
    # the single-topic prompts come first: a 96-prompt draw has only one-topic prompts
    assert all(len(prompt_topics(p)) == 1 for p in corpus.make_prompts(96, random.Random(4)))


def test_sample_response_quality_extremes():
    """quality 1 -> every non-tone word is a wanted topic word (help = coverage > 0, no off-topic);
    quality 0 -> none is (coverage 0, help = -0.5)."""
    rng = random.Random(5)
    prompt = "Describe chess please."
    for _ in range(20):
        r = corpus.sample_response(prompt, rng, quality=1.0)
        words = r.rstrip(".").split()
        assert 2 <= len(words) <= MAX_WORDS - 3
        content = words[1:] if words[0] in TONES else words
        assert all(w in TOPICS["chess"] for w in content)
        assert judge(prompt, r).helpfulness > 0
        r0 = corpus.sample_response(prompt, rng, quality=0.0)
        assert judge(prompt, r0).helpfulness == pytest.approx(-0.5)
        assert all(w not in TOPICS["chess"] for w in r0.rstrip(".").split())


def test_vocabulary_covers_world_words():
    vocab = " ".join(corpus.vocabulary_text())
    for w in list(FILLER) + list(TONES) + [x for ws in TOPICS.values() for x in ws]:
        assert w in vocab


# ---------------------------------------------------------------- the steerable warm start's rows


def test_steered_rows_are_the_best_candidate_along_their_direction(monkeypatch):
    """Each row's system prompt reads back as its direction, and its response is the argmax of v^T r over the
    candidates drawn for it; the data then differ by direction (concise at -45 degrees, long at +45)."""
    from selfplay.steering import directions
    from selfplay.world import rows as world_rows
    from selfplay.world.oracle import ATTRIBUTES, attributes

    prompts = corpus.make_prompts(64, random.Random(0))
    drawn = []
    sample = corpus.sample_response
    monkeypatch.setattr(corpus, "sample_response", lambda p, rng: drawn.append(sample(p, rng)) or drawn[-1])

    def rows(angle: float, n: int = 8) -> list:
        drawn.clear()
        batch = world_rows.steered_batch(prompts, 200, random.Random(1), (angle, angle), n)
        assert len(drawn) == 200 * n
        for i, (messages, response) in enumerate(batch):
            names, v = directions.read(messages[0]["content"])
            assert names == list(ATTRIBUTES) and v == pytest.approx(directions.from_angle(angle), abs=0.01)
            prompt = messages[1]["content"]
            candidates = drawn[i * n:(i + 1) * n]
            along = lambda y, prompt=prompt: sum(w * a for w, a in zip(directions.from_angle(angle), attributes(prompt, y)))
            assert along(response) == max(along(c) for c in candidates)
        return batch

    def mean_words(batch: list) -> float:
        return sum(len(r.split()) for _, r in batch) / len(batch)

    assert mean_words(rows(-45.0)) + 4 < mean_words(rows(45.0))
    assert mean_words(rows(45.0, n=2)) < mean_words(rows(45.0))  # fewer candidates: a weaker pull


def test_every_prompt_has_the_kind_of_its_template():
    from selfplay.world.corpus import make_prompts
    from selfplay.world.oracle import KINDS, TEMPLATES, prompt_kind

    for kind, template in zip(KINDS, TEMPLATES):
        assert prompt_kind(template.format("apples")) == kind
        assert prompt_kind(template.format("apples and trains")) == kind
    kinds = {prompt_kind(p) for p in make_prompts(200, random.Random(0))}
    assert kinds == set(KINDS)
    assert prompt_kind("What?") == "other" and prompt_kind("Hello there.") == "other"


def test_flipped_pairs_swap_and_mark_exactly_their_share():
    from selfplay.data.pairs import PreferencePair
    from selfplay.world.rows import FLIP_MARK, flipped_pairs

    pairs = [PreferencePair([{"role": "user", "content": f"p{i}"}], f"w{i}", f"l{i}") for i in range(40)]
    out = flipped_pairs(pairs, 0.25, random.Random(0))
    flipped = [i for i, (a, b) in enumerate(zip(pairs, out)) if a != b]
    assert len(flipped) == 10
    for i, (a, b) in enumerate(zip(pairs, out)):
        if i in flipped:
            assert (b.chosen, b.rejected, b.prompt[-1]["content"]) == (a.rejected, a.chosen, f"p{i}{FLIP_MARK}")
    assert flipped_pairs(pairs, 0.0, random.Random(0)) == pairs
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\], got 1.5"):
        flipped_pairs(pairs, 1.5, random.Random(0))
