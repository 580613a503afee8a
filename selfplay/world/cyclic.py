"""Cyclic (intransitive) preference datasets in the embedded world: [GPM] table 1.

Seed 004 induced preference cycles over four UltraFeedback metrics
(instruction following > honesty > truthfulness > helpfulness > instruction
following) and built four sub-datasets, each omitting one metric, so that each
is a 3-cycle; a Bradley-Terry (BT) reward model scored 50-62% on them and the
GPM 100%.  Here the same structure is built from the embedded world's words:

- a response is a few random on-topic words of a world prompt (``corpus`` /
  ``oracle`` vocabulary) closed by one *marker* word; the marker says which
  attribute the response excels at (``MARKERS``);
- a cycle is an ordered tuple of attributes; for two responses excelling at
  adjacent attributes ``a -> b`` the one at ``a`` is chosen.  Only adjacent
  pairs are generated, each cycle edge equally often, so on an n-cycle any
  scalar ranking (BT's model) gets at most (n - 1) / n of the pairs right
  (``best_transitive_accuracy``);
- ``tone`` is the oracle's own cyclic component (sure > well > hmm > sure,
  ``oracle.tone_cycle``): two responses with the same body, opening with
  different tones, the oracle's preferred one chosen.

In a pair both responses share one body and differ only in the class word, and
every pair has a fresh body, so held-out pairs (unseen bodies) test whether a
model learned the cyclic rule rather than memorised responses.

Datasets: ``no_<attribute>`` for each of the four attributes, and ``tone``.
Every split has ``SIZES[size]`` training pairs and ``TEST_PAIRS`` held-out pairs
whose response bodies never occur in training.  The CLI writes them as TRL
preference jsonl (``prompt``, ``chosen``, ``rejected``, ``subset``):

    python -m selfplay.world.cyclic --out DIR [--size small] [--seed 0]

``fit`` trains one preference model kind on a split from the world's SFT policy
and reports held-out accuracy (used by ``tests/test_cyclic.py`` and
``bench/cyclic.py``).
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from selfplay.data.pairs import PreferencePair, write_pairs_jsonl
from selfplay.world import corpus, oracle

ATTRIBUTES: tuple[str, ...] = ("instruction_following", "honesty", "truthfulness", "helpfulness")
# The full preference cycle of [GPM]: each attribute beats the next, the last beats the first.
CYCLE: tuple[str, ...] = ATTRIBUTES
# One plain word per attribute, each a single token of the world tokenizer (they are world filler words;
# response bodies use on-topic words only, so a marker is never ambiguous).
MARKERS: dict[str, str] = {
    "instruction_following": "okay",
    "honesty": "actually",
    "truthfulness": "really",
    "helpfulness": "basically",
}
DATASETS: tuple[str, ...] = tuple(f"no_{a}" for a in ATTRIBUTES) + ("tone",)
SIZES: dict[str, int] = {"small": 600, "medium": 1200, "large": 2400}
TEST_PAIRS = 300
BODY_WORDS = (3, 8)  # min, max on-topic words in a response body
N_PROMPTS = 256  # the world prompts responses are drawn for (all 96 one-topic prompts and 160 two-topic ones)

# The training budget shared by every model kind (see ``fit``): AdamW over the whole model (backbone and
# heads), STEPS steps of 64 pairs at a constant learning rate LR.  The GPM's value head starts on the
# difference subspace of the training pairs, each block oriented to score them the right way round, the gate
# uniform (``init_gpm_head``), not at random.  Why:
#
# In a pair both responses share their body, and the marker word moves the final hidden state little next
# to the body (chosen - rejected about 0.6 against a spread of about 8 over bodies).  From a random head the
# embedding is a common part c plus a small class part d, and s(i, j) = <R c, d_j - d_i> + <R d_i, d_j>.
# Summed over a balanced cycle the first-order (transitive) term's gradient cancels, so what grows d is
# second order in d: s = 0 is a saddle that a fit leaves only if its start had enough of d, and the time it
# takes grows like exp(integral of the lr), against minibatch noise that Adam's normalisation lets into every
# step.  What sets that start and that time:
#
# - the difference subspace: from a random head, lr 3e-4 left 3 of 35 fits on no_truthfulness below 0.75;
#   with a ridge of a tenth of the states' mean variance (GPM_INIT_RIDGE), not 1e-3: the directions where the
#   states barely vary read d best at the start (|W d| / |W h| 0.65) but the backbone's first updates add
#   variance there, and within 30 steps the ratio was 0.06 and the fit back at the saddle;
# - the orientation: an eigenvector's sign and a block's row order are arbitrary, and about half the blocks
#   started with their three classes in the wrong rotational order, scoring the cycle backwards (probe
#   accuracy 0.42-0.46).  Turning round passes through s = 0, the saddle again: at 150 steps of 64 pairs
#   12 of 150 large fits never got out (0.40-0.83 held out);
# - the uniform gate: a random prompt head weights each prompt's blocks at random and can mute the one that
#   carries d (an oriented gated large fit stayed at log 2 until step 110, by step 35 with lambda = 1/k);
# - the batch and the schedule: 64 pairs halve the noise's variance against 32 (the ten slowest medium fits
#   at 32 pairs left the saddle at steps 23-117 or never; at 64, by step 72), and a constant rate keeps the
#   whole budget for the escape (a linear decay to 0 has spent half its integral by mid-run: two of 35
#   medium fits then ended at 0.51 and 0.62).  Higher learning rates did not help (6e-4 and 1e-3 left a gated
#   fit at log 2 for 100 steps), nor a 10x rate for the heads alone, nor 30 steps of the heads alone first.
#
# With all four, the slowest fits we traced (the slowest cells of the earlier budgets) left the saddle by
# step 70; 120 steps leave 50 more.
STEPS = 120
BATCH_SIZE = 64
LR = 3e-4
SCHEDULE = "constant"  # after no warm-up (WARMUP_RATIO); see above
WARMUP_RATIO = 0.0
# The GPM's temperature here.  Its scores v_i^T R v_j lie in [-1, 1], so the logit s / tau is at most 1/4 and
# the loss keeps pushing pairs that are already right.  At lr 1e-3 from a random head and 100 steps, tau = 0.25
# left most fits at the transitive plateau, tau = 1 about half and tau = 4 one in six.
TAU = 4.0

Edge = tuple[str, str]  # (winner class, loser class)


def _check_name(name: str, valid: Sequence[str], what: str) -> None:
    if name not in valid:
        raise ValueError(f"unknown cyclic {what} '{name}'; expected one of {tuple(valid)}")


def cycle_edges(cycle: Sequence[str]) -> list[Edge]:
    """The (winner, loser) edges of a preference cycle: each class beats the next, the last beats the first."""
    return [(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))]


def tone_edges() -> list[Edge]:
    """The oracle's tone cycle as (winner, loser) edges, read from ``oracle.tone_cycle``."""
    return [(a, b) for a in oracle.TONES for b in oracle.TONES if oracle.tone_cycle(a, b) > 0]


def dataset_edges(name: str) -> list[Edge]:
    """The preference edges of dataset ``name``: a 3-cycle of attributes, or the oracle's tone cycle."""
    _check_name(name, DATASETS, "dataset")
    if name == "tone":
        return tone_edges()
    omitted = name[len("no_"):]
    return cycle_edges([a for a in CYCLE if a != omitted])


def response_class(response: str) -> str:
    """The class a response was generated for: its marker's attribute, or its opening tone."""
    words = response.rstrip(".").split()
    found = [a for a, m in MARKERS.items() if m in words]
    if words and words[0] in oracle.TONES:
        found.append(words[0])
    if len(found) != 1:
        raise ValueError(f"response {response!r} has {len(found)} class markers, expected exactly 1")
    return found[0]


class _Bodies:
    """Random on-topic word sequences for prompts, never the same sequence twice (so splits are disjoint)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[tuple[str, ...]] = set()

    def draw(self, prompt: str) -> list[str]:
        wanted = [w for t in oracle.prompt_topics(prompt) for w in oracle.TOPICS[t]]
        while True:
            body = tuple(self.rng.choice(wanted) for _ in range(self.rng.randint(*BODY_WORDS)))
            if body not in self.used:
                self.used.add(body)
                return list(body)


def class_word(cls: str) -> str:
    """The word that signals class ``cls`` in a response: a tone is its own word, an attribute its marker."""
    return cls if cls in oracle.TONES else MARKERS[cls]


def _pair(edge: Edge, prompt: str, bodies: _Bodies, subset: str) -> PreferencePair:
    """One pair on a fresh body: each response is the body with its class's word, where the oracle reads a
    tone (first) or closing the response (a marker), so the two differ in that word only."""
    body = bodies.draw(prompt)
    at = 0 if edge[0] in oracle.TONES else len(body)
    chosen, rejected = (" ".join([*body[:at], class_word(c), *body[at:]]) + "." for c in edge)
    return PreferencePair([{"role": "user", "content": prompt}], chosen, rejected, subset=subset)


def edge_pairs(edges: Sequence[Edge], sizes: Sequence[int], seed: int | str, subset: str) -> list[list[PreferencePair]]:
    """One list of pairs per entry of ``sizes``, over ``edges``, rows shuffled.

    Edges take turns, so they are balanced (exactly, when a size is a
    multiple of their number).  All lists come from one random stream and never share a body, so
    ``sizes=[n_train, n_test]`` gives a disjoint split whose first part is the
    same as ``sizes=[n_train]``.  Deterministic given ``seed``.
    """
    if not edges:
        raise ValueError("edge_pairs needs at least one (winner, loser) edge")
    rng = random.Random(seed)
    prompts = corpus.make_prompts(N_PROMPTS, rng)
    bodies = _Bodies(rng)
    out = []
    for n in sizes:
        part = [_pair(edges[i % len(edges)], rng.choice(prompts), bodies, subset) for i in range(n)]
        rng.shuffle(part)
        out.append(part)
    return out


def _dataset_parts(name: str, sizes: Sequence[int], seed: int) -> list[list[PreferencePair]]:
    return edge_pairs(dataset_edges(name), sizes, f"{name}:{seed}", subset=name)


def make_dataset(name: str, n_pairs: int, seed: int) -> list[PreferencePair]:
    """``n_pairs`` pairs of dataset ``name`` (one of ``DATASETS``), ``subset=name``.  Deterministic given ``seed``."""
    return _dataset_parts(name, [n_pairs], seed)[0]


def make_split(name: str, size: str, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, test): ``SIZES[size]`` training pairs and ``TEST_PAIRS`` held-out pairs with unseen bodies."""
    _check_name(size, tuple(SIZES), "size")
    train, test = _dataset_parts(name, [SIZES[size], TEST_PAIRS], seed)
    return train, test


def best_transitive_accuracy(pairs: Sequence[PreferencePair]) -> float:
    """The best accuracy any strict ranking of the response classes gets on ``pairs`` (exact, by brute force).

    A BT reward model that scores responses by class can do no better; on a
    balanced n-cycle this is (n - 1) / n, on transitive data 1.
    """
    if not pairs:
        raise ValueError("best_transitive_accuracy needs at least one pair")
    edges = Counter((response_class(p.chosen), response_class(p.rejected)) for p in pairs)
    classes = sorted({c for e in edges for c in e})
    best = 0
    for order in itertools.permutations(classes):  # order[0] ranks highest
        rank = {c: -i for i, c in enumerate(order)}
        best = max(best, sum(n for (w, l), n in edges.items() if rank[w] > rank[l]))
    return best / len(pairs)


def fit(
    kind: str,
    train: list[PreferencePair],
    test: list[PreferencePair],
    backbone_dir: str,
    tokenizer: PreTrainedTokenizerBase,
    k: int = 2,
    gate: bool = False,
    tau: float = TAU,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    warmup_ratio: float = WARMUP_RATIO,
    schedule: str = SCHEDULE,
    seed: int = 0,
    difference_init: bool = True,
    train_accuracy: bool = True,
) -> dict[str, float]:
    """Train a fresh ``kind`` model (``selfplay.models.kinds``) from ``backbone_dir`` on ``train``.

    Every kind gets the same backbone and budget (steps, batch size, lr, warm-up and schedule, seed); ``k``, ``gate``
    and ``tau`` apply to the GPM only, and so does ``difference_init``: its value head starts on the directions
    along which the training pairs' responses differ (``init_gpm_head``; see the budget above).
    Returns held-out ``accuracy`` on ``test``, ``train_accuracy`` (unless ``train_accuracy=False``), the last
    step's ``loss`` and the wall-clock ``seconds`` of loading, training and evaluating.
    """
    import torch

    from selfplay.models.backbone import load_backbone
    from selfplay.models.kinds import new_preference_model
    from selfplay.models.training import init_gpm_head, pair_accuracy, train_preference_model

    start = time.perf_counter()
    torch.manual_seed(seed)  # the heads' initialisation
    model = new_preference_model(kind, load_backbone(backbone_dir), k=k, gate=gate, tau=tau)
    if kind == "gpm" and difference_init:
        init_gpm_head(model, tokenizer, train, batch_size * 8, seed)
    losses = train_preference_model(model, tokenizer, train, steps, batch_size, lr, seed, warmup_ratio, schedule)
    out = {"accuracy": pair_accuracy(model, tokenizer, test), "loss": losses[-1]}
    if train_accuracy:
        out["train_accuracy"] = pair_accuracy(model, tokenizer, train)
    return {**out, "seconds": time.perf_counter() - start}


def write_datasets(out: str | Path, size: str, seed: int, names: Sequence[str] = DATASETS) -> Path:
    """Write ``out/<name>/{train,test}.jsonl`` for every dataset and ``out/all/{train,test}.jsonl`` (concatenated)."""
    out = Path(out)
    everything: dict[str, list[PreferencePair]] = {"train": [], "test": []}
    for name in names:
        for part, pairs in zip(("train", "test"), make_split(name, size, seed)):
            write_pairs_jsonl(out / name / f"{part}.jsonl", pairs)
            everything[part] += pairs
    for part, pairs in everything.items():
        write_pairs_jsonl(out / "all" / f"{part}.jsonl", pairs)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``python -m selfplay.world.cyclic --out DIR [--size small] [--seed 0]``."""
    ap = argparse.ArgumentParser(prog="python -m selfplay.world.cyclic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory to write <dataset>/{train,test}.jsonl into")
    ap.add_argument("--size", default="small", choices=tuple(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = write_datasets(args.out, args.size, args.seed)
    print(f"wrote {len(DATASETS)} cyclic datasets ({args.size}: {SIZES[args.size]} train / {TEST_PAIRS} test pairs each) "
          f"and all/ to {out}")


if __name__ == "__main__":
    main()
