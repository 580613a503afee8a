"""Rows the embedded world draws from its corpus and labels with its oracle: SFT rows, direction-conditioned
best-of-n rows, labelled preference pairs and attribute rows.
"""

from __future__ import annotations

import random

import torch

from selfplay.algorithms.examples import rejection_sample
from selfplay.core.lm import Messages
from selfplay.data.pairs import PreferencePair
from selfplay.steering import directions
from selfplay.world import corpus, oracle

def as_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def corpus_batch(prompts: list[str], size: int, rng: random.Random) -> list[tuple[Messages, str]]:
    """The SFT warm start's rows: a prompt and one sampled response of random quality."""
    batch = [rng.choice(prompts) for _ in range(size)]
    return [(as_messages(p), corpus.sample_response(p, rng)) for p in batch]


def steered_batch(
    prompts: list[str], size: int, rng: random.Random, angles: tuple[float, float], candidates: int
) -> list[tuple[Messages, str]]:
    """The steerable warm start's rows: a direction v at an angle in ``angles`` (degrees) in the system prompt
    and, of ``candidates`` sampled responses, the one with the highest v^T r under the oracle's attribute
    labels (SteerLM's role in [DPA]: learn to follow the labels from labelled data)."""
    rows = []
    for _ in range(size):
        p = rng.choice(prompts)
        v = directions.sample_angle(rng, *angles)
        drawn = [corpus.sample_response(p, rng) for _ in range(candidates)]
        labels = torch.tensor([oracle.attributes(p, r) for r in drawn], dtype=torch.float64)
        rows.append((directions.condition(as_messages(p), v, oracle.ATTRIBUTES), drawn[rejection_sample(labels, v)]))
    return rows


def labelled_pairs(prompts: list[str], n: int, rng: random.Random, length_by_kind: float = 0.0) -> list[PreferencePair]:
    """n pairs of sampled responses, the oracle's preferred one as chosen (near-ties dropped)."""
    pairs = []
    while len(pairs) < n:
        p = rng.choice(prompts)
        a, b = corpus.sample_response(p, rng), corpus.sample_response(p, rng)
        s = oracle.preference_logit(oracle.judge(p, a), oracle.judge(p, b), oracle.length_weight(p, length_by_kind))
        if abs(s) < 0.25:
            continue
        pairs.append(PreferencePair(as_messages(p), a, b) if s > 0 else PreferencePair(as_messages(p), b, a))
    return pairs


FLIP_MARK = " [FLIP]"


def flipped_pairs(pairs: list[PreferencePair], share: float, rng: random.Random) -> list[PreferencePair]:
    """Seed 000 fig. 2's distorted data: ``round(share * len(pairs))`` pairs drawn at random get chosen and
    rejected swapped and ``FLIP_MARK`` appended to their prompt's last message; the others are unchanged."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the share of flipped labels must lie in [0, 1], got {share}")
    flip = set(rng.sample(range(len(pairs)), round(share * len(pairs))))
    out = []
    for i, pair in enumerate(pairs):
        if i in flip:
            marked = [*pair.prompt[:-1], {**pair.prompt[-1], "content": pair.prompt[-1]["content"] + FLIP_MARK}]
            pair = PreferencePair(marked, pair.rejected, pair.chosen, pair.subset)
        out.append(pair)
    return out


def attribute_row(prompts: list[str], rng: random.Random, missing_share: float) -> dict:
    """One sampled (prompt, response) with the oracle's attribute labels; each label is missing with
    probability ``missing_share`` (never both)."""
    p = rng.choice(prompts)
    response = corpus.sample_response(p, rng)
    row = {"prompt": p, "response": response, **dict(zip(oracle.ATTRIBUTES, oracle.attributes(p, response)))}
    if rng.random() < missing_share * len(oracle.ATTRIBUTES):
        row[rng.choice(oracle.ATTRIBUTES)] = None
    return row
