"""Synthetic prompts and responses for the embedded world.

Responses are drawn with a per-response quality q: each word is one of the
prompt's topic words with probability q, otherwise a filler word or another
topic's word.  Training the policy on this corpus gives it a mixed-quality
response distribution, so that self-play has something to improve.
"""

from __future__ import annotations

import random

from selfplay.world.oracle import FILLER, MAX_WORDS, TEMPLATES, TONES, TOPICS, prompt_topics

_TOPIC_NAMES = tuple(TOPICS)


def make_prompts(n: int, rng: random.Random) -> list[str]:
    """n distinct prompts about one topic (the 96 possible ones first) or two topics."""
    singles = [t.format(a) for t in TEMPLATES for a in _TOPIC_NAMES]
    rng.shuffle(singles)
    pairs = [t.format(f"{a} and {b}") for t in TEMPLATES for a in _TOPIC_NAMES for b in _TOPIC_NAMES if a != b]
    rng.shuffle(pairs)
    pool = singles + pairs
    if n > len(pool):
        raise ValueError(f"the embedded world has {len(pool)} distinct prompts, {n} asked for")
    prompts = pool[:n]
    rng.shuffle(prompts)
    return prompts


def sample_response(prompt: str, rng: random.Random, quality: float | None = None) -> str:
    """One response of random length, tone and quality for `prompt`."""
    wanted = [w for t in prompt_topics(prompt) for w in TOPICS[t]]
    others = [w for t in _TOPIC_NAMES for w in TOPICS[t] if w not in wanted]
    q = rng.uniform(0.05, 0.95) if quality is None else quality
    n = rng.randint(2, MAX_WORDS - 4)
    words = [rng.choice(TONES)] if rng.random() < 0.9 else []
    for _ in range(n):
        if rng.random() < q:
            words.append(rng.choice(wanted))
        else:
            words.append(rng.choice(FILLER) if rng.random() < 0.7 else rng.choice(others))
    return " ".join(words) + "."


def vocabulary_text() -> list[str]:
    """Every word the world uses, for tokenizer training."""
    words = list(TOPICS) + [w for ws in TOPICS.values() for w in ws] + list(FILLER) + list(TONES)
    return words + list(TEMPLATES)
