"""The scorer's part of the run's config schema (``scorer.*``): which judge scores the responses, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import OmegaConf

from selfplay.algorithms.registry import get_algorithm

# scorer.tau when unset, per scorer kind: the GPM's P = sigma(s / tau); the multi-objective model's
# P = sigma(v^T (r_i - r_j) / tau) on 0-100 ratings (10 rating points = 1 logit); ArmoRM's on its [0, 1] rewards,
# the same tenth of the range per logit (0.1 = half a HelpSteer point, as a rating is 5 r - 0.5).  BT, pairwise
# and ArmoRM's gated score: none (their differences are the log-odds they were trained as).
DEFAULT_TAU = {"gpm": 0.1, "multi_objective": 10.0, "armorm": 0.1}
SCORER_DTYPES = ("auto", "float32", "bfloat16", "float16")

OmegaConf.register_resolver("scorer_tau", lambda kind: DEFAULT_TAU.get(kind), replace=True)


@dataclass
class ScorerConfig:
    kind: str = "gpm"  # gpm | bt | pairwise | multi_objective | armorm | pairrm
    # Directory or hub name of a checkpoint of that kind (a GPM in the published layout, a Hugging Face
    # sequence-classification reward model, or one written by selfplay.train_pm); None: the embedded world's.
    model: Optional[str] = None
    tokenizer: Optional[str] = None  # defaults to scorer.model
    k: Optional[int] = None  # GPM only: refuse a checkpoint whose heads are not this size; None reads it
    # GPM: P = sigma(s / tau); multi_objective: P = sigma(v^T (r_i - r_j) / tau); unset: DEFAULT_TAU by kind
    tau: Optional[float] = "${scorer_tau:${.kind}}"
    batch_size: int = 64
    # The weights' precision: auto (bfloat16 on a GPU, as judges are published; float32 on the CPU) | float32 |
    # bfloat16 | float16.
    dtype: str = "auto"
    # multi_objective / armorm: the scored objectives, rows by name ({helpfulness: 0, verbosity: 4}) or a list of
    # the model's own output names; None: every output of a multi_objective model, ArmoRM's helpfulness (row 0)
    # and verbosity (row 4).  Setting it makes an armorm run directional.
    attributes: Optional[Any] = None
    trust_remote_code: bool = False  # as policy.trust_remote_code, for the scorer's model
    allow_pickle: bool = False  # as policy.allow_pickle
    # pairrm only: the source text it reads.  template (SPPO's scripts/rank.py): the prompt in the policy's chat
    # template, ending with its assistant header; last_turn (LLM-Blender's examples): the raw last user turn.
    source: str = "template"
    # none: the kind's own log-odds S; sppo: SPPO's K-way aggregation (scripts/rank.py, compute_prob.py),
    # S[i, j] = score_i - score_j with score_i = mean_j S[i, j], so that sigmoid(S) is SPPO's P.
    aggregate: str = "none"
    num_cpus: float = 0.0
    num_gpus: float = 0.0


def attribute_selection(s):
    """``scorer.attributes`` as plain values for the loaders (a dict or a list), or None."""
    return None if s.attributes is None else OmegaConf.to_container(s.attributes)


def directions_set(d) -> bool:
    """Whether the ``directions`` section asks for anything beyond its defaults that only a directional run reads."""
    return d.fixed is not None or d.center is not None or d.per_prompt != 1 or d.grid is not None


def directional(cfg) -> bool:
    """Whether the run conditions prompts on directions over the scorer's objectives (``DirectionalJudge``): always
    with a multi_objective scorer; with ArmoRM when the run asks for directions (an algorithm that needs them,
    directions.*, or scorer.attributes), otherwise its gated scalar score judges the pairs."""
    kind = cfg.scorer.kind
    if kind != "armorm":
        return kind == "multi_objective"
    wants = get_algorithm(cfg.algo.name).needs_directions  # e.g. DPA, which ranks responses by v^T r
    return wants or cfg.scorer.attributes is not None or directions_set(cfg.directions)
