"""Scorer actor: holds the preference model (any kind), loaded from its ``ScorerSpec``; its verbs are
``selfplay.models.preference_scorer.Scoring``'s."""

from __future__ import annotations

from actors.roles import shell
from selfplay.models.preference_scorer import ScorerSpec, Scoring

ScoringWorker = shell("ScoringWorker", Scoring, ScorerSpec.load, module=__name__)
