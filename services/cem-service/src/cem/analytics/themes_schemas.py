"""What the comments talk about, and how it goes with the score."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from cem.analytics.drivers_schemas import Comparison, ComparisonReport

EXAMPLE_THEMES = {
    "metric": "nps",
    "definition": "Per answer: promoter +100, passive 0, detractor -100 (their mean is the NPS). effect = NPS of the "
    "answers with the level - NPS of the other answers, in NPS points.",
    "filters": {"survey_id": None, "touchpoint": None, "from": "2026-09-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
    "min_n": 10,
    "n": 820,
    "without_comment": 1020,
    "score": 18.4,
    "test": "welch-t",
    "adjustment": "benjamini-hochberg",
    "alpha": 0.05,
    "themes": [
        {
            "theme": "delivery",
            "stem": "deliveri",
            "status": "tested",
            "n": 212,
            "share": 0.2585,
            "rest_n": 608,
            "score": -12.74,
            "rest_score": 29.28,
            "effect": -42.02,
            "ci95": {"low": -55.1, "high": -28.94},
            "p_value": 4.2e-9,
            "p_adjusted": 8.4e-8,
            "significant": True,
        }
    ],
}


class Theme(Comparison):
    theme: str = Field(description="The word as the comments write it most often.")
    stem: str = Field(description="The stem the words were counted under (delivery, deliveries -> deliveri).")
    share: float = Field(description="n / the answers with a comment.")


class ThemeReport(ComparisonReport):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_THEMES]})

    n: int = Field(description="Scored answers with a comment (the themes come from these).")
    without_comment: int = Field(description="Scored answers without one, left out.")
    themes: list[Theme] = Field(description="The `limit` most mentioned themes, most mentioned first.")
