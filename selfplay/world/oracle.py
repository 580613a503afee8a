"""The embedded world's ground truth: topics, vocabulary and the oracle judge.

A prompt asks about one or two topics.  A response is a short sentence of words.
The oracle reads both as plain text and scores three attributes:

- helpfulness: the share of the prompt's topic words the response mentions, minus a
  penalty for the share of words that are off-topic (filler or other topics' words);
- verbosity: the number of words, scaled to [0, 1] by ``MAX_WORDS``;
- tone: the response's first word, one of ``TONES``, compared cyclically
  (rock-paper-scissors: sure > well > hmm > sure), so no scalar reward can
  represent the oracle's preferences (a Bradley-Terry model cannot fit them).

Its helpfulness and verbosity, rescaled to 0-100, are the attribute labels of the
world's multi-objective reward model (``attributes``; docs/methods.md §2.3).

The oracle's preference log-odds are
``s(y_i > y_j | x) = HELP_WEIGHT (help_i - help_j) + TONE_WEIGHT cyc(tone_i, tone_j)
+ w(x) (verbosity_i - verbosity_j)`` and ``P(y_i > y_j | x) = sigmoid(s)``.

In the default world ``w(x) = 0``: verbosity is reported, not rewarded, so a
policy that just talks longer does not win, which makes the oracle a
reward-hacking detector for length.  With ``world.length_by_kind = w > 0`` the
preference depends on the kind of prompt (``length_weight``): "Explain {} briefly."
prompts (``BRIEF_KINDS``) prefer short answers (``w(x) = -w``) and every other
kind thorough ones (``w(x) = +w``): a pattern a latent code of the prompt can
carry (LPC, [LPC]).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

TOPICS: dict[str, tuple[str, ...]] = {
    "apples": ("red", "sweet", "orchard", "crisp", "juice", "tree"),
    "rivers": ("water", "flow", "bank", "delta", "fish", "current"),
    "robots": ("metal", "sensor", "motor", "circuit", "program", "arm"),
    "music": ("melody", "rhythm", "guitar", "song", "chord", "drum"),
    "oceans": ("wave", "salt", "tide", "coral", "whale", "deep"),
    "bread": ("flour", "yeast", "oven", "crust", "dough", "bake"),
    "stars": ("light", "galaxy", "bright", "orbit", "gas", "night"),
    "chess": ("king", "pawn", "board", "knight", "move", "check"),
    "forests": ("pine", "moss", "leaf", "trail", "bark", "shade"),
    "trains": ("rail", "station", "engine", "track", "ticket", "steam"),
    "coffee": ("bean", "roast", "brew", "cup", "aroma", "espresso"),
    "winter": ("snow", "cold", "ice", "frost", "scarf", "sled"),
    "cities": ("street", "tower", "traffic", "park", "crowd", "bridge"),
    "birds": ("feather", "nest", "wing", "beak", "flock", "egg"),
    "volcanoes": ("lava", "ash", "crater", "magma", "erupt", "rock"),
    "gardens": ("flower", "soil", "seed", "bloom", "weed", "hose"),
}
FILLER: tuple[str, ...] = (
    "thing", "stuff", "maybe", "random", "basically", "whatever", "kind", "sort", "actually", "okay",
    "like", "just", "really", "very", "so", "um", "yeah", "anyway", "perhaps", "somehow",
)
TONES: tuple[str, ...] = ("sure", "well", "hmm")
TEMPLATES: tuple[str, ...] = (
    "Tell me about {}.",
    "What do you know about {}?",
    "Describe {} please.",
    "Explain {} briefly.",
    "Give me facts on {}.",
    "Talk about {}.",
)
MAX_WORDS = 16
HELP_WEIGHT = 6.0
TONE_WEIGHT = 1.0
OFF_TOPIC_PENALTY = 0.5

ATTRIBUTES: tuple[str, ...] = ("helpfulness", "verbosity")  # the labels, 0-100
HELPFULNESS_RANGE = (-OFF_TOPIC_PENALTY, 1.0)

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Judgement:
    helpfulness: float
    verbosity: float
    tone: str  # one of TONES, or "" when the response does not open with one


KINDS: tuple[str, ...] = ("tell", "what", "describe", "briefly", "facts", "talk")  # one per template, in order
BRIEF_KINDS: tuple[str, ...] = ("briefly",)  # the kinds that prefer short answers when length_by_kind > 0


def prompt_kind(prompt: str) -> str:
    """The kind of a prompt: the template it was made from (``KINDS``), or ``other``."""
    for kind, template in zip(KINDS, TEMPLATES):
        head, tail = template.split("{}")
        if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) > len(head) + len(tail):
            return kind
    return "other"


def prompt_topics(prompt: str) -> list[str]:
    """The topics a prompt asks about, in order of appearance."""
    words = _WORD.findall(prompt.lower())
    return [w for w in words if w in TOPICS]


def judge(prompt: str, response: str) -> Judgement:
    topics = prompt_topics(prompt)
    wanted = {w for t in topics for w in TOPICS[t]}
    words = _WORD.findall(response.lower())
    tone = words[0] if words and words[0] in TONES else ""
    content = words[1:] if tone else words
    coverage = len(wanted & set(content)) / len(wanted) if wanted else 0.0
    off_topic = sum(w not in wanted for w in content) / len(content) if content else 1.0
    return Judgement(
        helpfulness=coverage - OFF_TOPIC_PENALTY * off_topic,
        verbosity=min(len(words), MAX_WORDS) / MAX_WORDS,
        tone=tone,
    )


def tone_cycle(a: str, b: str) -> int:
    """+1 if tone a beats tone b in the cycle sure > well > hmm > sure, -1 if it loses, 0 otherwise."""
    if a not in TONES or b not in TONES or a == b:
        return 0
    return 1 if (TONES.index(a) + 1) % len(TONES) == TONES.index(b) else -1


def length_weight(prompt: str, length_by_kind: float) -> float:
    """w(x): the log-odds weight on the verbosity difference, -length_by_kind for the prompts of ``BRIEF_KINDS``,
    +length_by_kind for the others."""
    return -length_by_kind if prompt_kind(prompt) in BRIEF_KINDS else length_by_kind


def preference_logit(a: Judgement, b: Judgement, length: float = 0.0) -> float:
    """s(a > b | x): skew-symmetric oracle log-odds; ``length`` is the prompt's w(x) (``length_weight``)."""
    return (HELP_WEIGHT * (a.helpfulness - b.helpfulness) + TONE_WEIGHT * tone_cycle(a.tone, b.tone)
            + length * (a.verbosity - b.verbosity))


def preference_matrix(prompt: str, responses: list[str], length_by_kind: float = 0.0) -> list[list[float]]:
    """P[i][j] = P(y_i > y_j | x) under the oracle (diagonal 0.5)."""
    js, w = [judge(prompt, r) for r in responses], length_weight(prompt, length_by_kind)
    return [[1.0 / (1.0 + math.exp(-preference_logit(a, b, w))) for b in js] for a in js]


def attributes(prompt: str, response: str) -> tuple[float, ...]:
    """The labels of ``ATTRIBUTES`` on 0-100 ([DPA]'s scale): helpfulness from its range, verbosity x 100."""
    j = judge(prompt, response)
    low, high = HELPFULNESS_RANGE
    return (100 * (j.helpfulness - low) / (high - low), 100 * j.verbosity)
