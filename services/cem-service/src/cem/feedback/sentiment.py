"""Sentiment of free text with VADER (vaderSentiment): a lexicon shipped with the library, run in
process, so no text ever leaves the service."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# VADER's own recommended cut-offs on the compound score.
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05


@dataclass(frozen=True, slots=True)
class Sentiment:
    label: str
    score: float


@functools.cache
def analyzer() -> SentimentIntensityAnalyzer:
    """Loaded once per process (reading the lexicon takes a moment)."""
    return SentimentIntensityAnalyzer()


def sentiment_of(text: str) -> Sentiment:
    """Label positive / neutral / negative and the compound score in -1..1."""
    compound = float(analyzer().polarity_scores(text)["compound"])
    label = "positive" if compound >= POSITIVE_AT else "negative" if compound <= NEGATIVE_AT else "neutral"
    return Sentiment(label, round(compound, 4))
