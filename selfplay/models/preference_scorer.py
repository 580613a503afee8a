"""The scorer: K x K preference scores for K responses to one prompt (docs/methods.md §1 (step 3)).

``scores[i, j]`` is the preference log-odds of y_i over y_j, so
``sigmoid(scores)`` is the probability matrix P(y_i > y_j | x):

- GPM: s(y_i > y_j | x) / tau, K forward passes then one small matrix product;
- BT reward model: r_i - r_j, K forward passes;
- pairwise baseline: (f(i, j) - f(j, i)) / 2, K(K-1) forward passes;
- PairRM: l(i, j) - l(j, i), K(K-1) forward passes (selfplay.models.pairrm).

Every kind's matrix is skew-symmetric with a zero diagonal, so P + P^T = 1.  With ``scorer.aggregate=sppo``
the scorer returns SPPO's aggregation of it instead (``sppo_aggregate``).

A multi-objective reward model (docs/methods.md §2.3) gives no matrix of its own: ``rewards``
returns its (K, m) attribute rewards, which the self-play loop turns into scores
along a direction v, S = v^T (r_i - r_j) / tau.  ArmoRM gives both: its objectives' rewards, and the
matrix of its gated scalar score, S = s_i - s_j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from selfplay.core.lm import DTYPES, Messages, ModelTrust, load_tokenizer
from selfplay.models import DIRECTIONAL_KINDS, judge_dtype

if TYPE_CHECKING:  # the model classes import transformers' (~2 s): only the scorer's process loads them
    from selfplay.models.backbone import PreferenceModel
    from selfplay.models.multi_objective import Selection


def sppo_aggregate(s: torch.Tensor) -> torch.Tensor:
    """SPPO's K-way aggregation (uclaml/SPPO scripts/rank.py, compute_prob.py): each response's score is
    score_i = mean_j S[i, j] over all K columns, the zero diagonal included (LLM-Blender's get_scores_from_cmps,
    (C - C^T).mean(-1), which is S.mean(-1) for PairRM's S = C - C^T), and the matrix is S'[i, j] = score_i - score_j,
    so sigmoid(S') is compute_prob.py's P[i][j] = 1 / (1 + exp(score_j - score_i)).  (K, K) -> (K, K), skew-symmetric."""
    score = s.mean(-1)
    return score[:, None] - score[None, :]


class Scoring(Protocol):
    """The scorer's verbs, declared once (``selfplay.policy.verbs`` for the others'): what the scorer actor
    forwards and its group offers."""

    def score(self, prompts: list[Messages], responses: list[list[str]]) -> list[torch.Tensor]:
        """One (K_p, K_p) log-odds matrix per prompt."""

    def rewards(self, prompts: list[Messages], responses: list[list[str]]) -> list[torch.Tensor]:
        """A multi-objective model's (K_p, m) attribute rewards per prompt."""


class Scorer:
    """A preference model with its tokenizer: what the scorer actor and the PM evaluation hold (``Scoring``)."""

    def __init__(self, model: PreferenceModel, tokenizer, batch_size: int, aggregate: str = "none"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.aggregate = aggregate

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def attributes(self) -> list[str] | None:
        """The scored attribute names of a multi-objective model (its reward columns); None for the other kinds."""
        return list(self.model.scored) if self.kind in DIRECTIONAL_KINDS else None

    def rewards(self, prompts: list[Messages], responses: list[list[str]]) -> list[torch.Tensor]:
        """One (K_p, m) tensor of attribute rewards per prompt (0-100 for ours, about [0, 1] for ArmoRM), columns in
        ``attributes`` order."""
        if self.kind not in DIRECTIONAL_KINDS:
            raise ValueError(f"rewards: the scorer is a '{self.kind}' model; attribute rewards come from a "
                             f"multi-objective reward model (scorer.kind={' | '.join(DIRECTIONAL_KINDS)})")
        return self.model.attribute_rewards(self.tokenizer, prompts, responses, self.batch_size)

    def score(self, prompts: list[Messages], responses: list[list[str]]) -> list[torch.Tensor]:
        """One (K_p, K_p) log-odds matrix per prompt (SPPO's aggregation of it with aggregate sppo); K may differ."""
        mats = self.model.score_matrices(self.tokenizer, prompts, responses, self.batch_size)
        return [sppo_aggregate(m) for m in mats] if self.aggregate == "sppo" else mats

    def probabilities(self, prompts: list[Messages], responses: list[list[str]]) -> list[torch.Tensor]:
        """One (K_p, K_p) matrix of P(y_i > y_j | x) per prompt (0.5 on the diagonal)."""
        return [torch.sigmoid(s) for s in self.score(prompts, responses)]


def load_scorer(kind: str, model: str, batch_size: int, **options) -> Scorer:
    """The library's keyword form of ``ScorerSpec(kind, model, batch_size, **options).load()`` (``options``:
    ``ScorerSpec``'s other fields: k, tau, tokenizer, device, trust, dtype, attributes, aggregate, source,
    template)."""
    return ScorerSpec(kind, model, batch_size, **options).load()


@dataclass(frozen=True)
class ScorerSpec:
    """What a scorer is loaded from, made from ``scorer.*`` for the scorer actor (``of``): the ``kind``
    checkpoint ``model`` (directory or hub name) in ``dtype`` (``scorer.dtype``) and its tokenizer (default: the
    same place; PairRM's: see ``load_pairrm``); ``trust``: the scorer's opt-ins (``scorer.trust_remote_code`` /
    ``scorer.allow_pickle``); ``attributes``: ``scorer.attributes``; ``aggregate``: ``scorer.aggregate``; PairRM
    only: ``source`` (``scorer.source``) and ``template``, the tokenizer whose chat template formats the source
    (the policy's)."""

    kind: str
    model: str
    batch_size: int
    k: int | None = None
    tau: float | None = None
    tokenizer: str | None = None
    device: str = "cpu"
    trust: ModelTrust = ModelTrust()
    dtype: str = "auto"
    attributes: Selection = None
    aggregate: str = "none"
    source: str = "last_turn"
    template: str | None = None

    @classmethod
    def of(cls, s, model: str, tokenizer: str | None, template: str | None, attributes: Selection) -> ScorerSpec:
        """The ``scorer`` section ``s``'s model ``model`` (with ``tokenizer``), on the GPU if it has one;
        ``template``: the policy's tokenizer; ``attributes``: ``scorer.attributes`` as plain values
        (``selfplay.config.scoring.attribute_selection``)."""
        return cls(s.kind, model, s.batch_size, s.k, s.tau, tokenizer, "cuda" if s.num_gpus > 0 else "cpu",
                   ModelTrust.of(s), s.dtype, attributes, s.aggregate, s.source, template)

    def load(self) -> Scorer:
        from selfplay.models.kinds import load_preference_model
        from selfplay.models.pairrm import load_pairrm

        torch_dtype = DTYPES[judge_dtype(self.dtype, self.device)]
        if self.kind == "pairrm":
            pm, tok = load_pairrm(self.model, self.tokenizer, self.trust, self.source, self.template, dtype=torch_dtype)
            return Scorer(pm.to(self.device), tok, self.batch_size, self.aggregate)
        pm = load_preference_model(self.kind, self.model, k=self.k, tau=self.tau, trust=self.trust, dtype=torch_dtype,
                                   attributes=self.attributes).to(self.device)
        return Scorer(pm, load_tokenizer(self.tokenizer or self.model, self.trust), self.batch_size, self.aggregate)
