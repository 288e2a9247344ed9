"""The key-driver analysis' answer: which factors go with a higher or lower score."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cem.analytics.schemas import Filters, Interval95
from cem.surveys.questions import Metric

FactorKind = Literal["touchpoint", "interaction_type", "journey_stage", "lifecycle_stage", "open_deal_value", "tag"]
Status = Literal["tested", "too_few", "no_variance"]

EXAMPLE_DRIVERS = {
    "metric": "nps",
    "definition": "Per answer: promoter +100, passive 0, detractor -100 (their mean is the NPS). effect = NPS of "
    "the answers with the level - NPS of the other answers, in NPS points.",
    "filters": {"survey_id": None, "touchpoint": None, "from": "2026-09-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
    "window_days": 30,
    "min_n": 10,
    "n": 1840,
    "anonymous": 112,
    "score": 21.3,
    "test": "welch-t",
    "adjustment": "benjamini-hochberg",
    "alpha": 0.05,
    "factors": [
        {
            "factor": "interaction_type",
            "level": "support_ticket_reopened",
            "status": "tested",
            "n": 164,
            "rest_n": 1676,
            "score": -18.9,
            "rest_score": 25.24,
            "effect": -44.14,
            "ci95": {"low": -57.02, "high": -31.26},
            "p_value": 3.1e-10,
            "p_adjusted": 6.2e-9,
            "significant": True,
        },
        {
            "factor": "open_deal_value",
            "level": "10k_100k",
            "status": "tested",
            "n": 302,
            "rest_n": 1538,
            "score": 30.46,
            "rest_score": 19.5,
            "effect": 10.96,
            "ci95": {"low": 0.12, "high": 21.8},
            "p_value": 0.0476,
            "p_adjusted": 0.476,
            "significant": False,
        },
        {
            "factor": "tag",
            "level": "beta-tester",
            "status": "too_few",
            "n": 6,
            "rest_n": 1834,
            "score": 66.67,
            "rest_score": 21.16,
            "effect": None,
            "ci95": None,
            "p_value": None,
            "p_adjusted": None,
            "significant": False,
        },
    ],
}


class Comparison(BaseModel):
    """A group of answers (those with a factor's level, or mentioning a theme) against the
    other answers: what `cem.analytics.drivers.result_fields` fills in."""

    status: Status = Field(
        description="tested: effect, interval and p-values computed; too_few: fewer than `min_n` answers with or "
        "without it (no test); no_variance: every answer on both sides scored the same (no test). When every answer "
        "with it scored one value and every other answer another (no spread on either side, different scores), the "
        "difference is certain given the data: tested, with `p_value` 0 and `ci95` [effect, effect], as "
        "scipy.stats.ttest_ind(equal_var=False) answers, and adjusted with the other tested ones."
    )
    n: int = Field(description="Answers with it.")
    rest_n: int = Field(description="Answers without it (the comparison group).")
    score: float | None = Field(description="The metric over the answers with it.")
    rest_score: float | None = Field(description="The metric over the other answers.")
    effect: float | None = Field(
        description="score - rest_score: NPS points, CSAT percentage points or CES scale points. Null unless tested."
    )
    ci95: Interval95 | None = Field(description="95% Welch t interval of `effect`. Null unless tested.")
    p_value: float | None = Field(description="Two-sided Welch t-test p-value. Null unless tested.")
    p_adjusted: float | None = Field(
        description="The p-value adjusted for multiple comparisons across all the levels (or themes) tested in the "
        "answer (Benjamini-Hochberg, false discovery rate). Null unless tested."
    )
    significant: bool = Field(description="p_adjusted < alpha.")


class ComparisonReport(BaseModel):
    """What a report of `Comparison`s says of itself."""

    metric: Metric
    definition: str = Field(description="What one answer contributes and what `effect` measures.")
    filters: Filters
    min_n: int = Field(description="Fewest answers with and without a level (or theme) for it to be tested.")
    score: float | None = Field(description="The metric over the answers analysed.")
    test: Literal["welch-t"] = Field(description="Each against the rest: Welch's unequal-variances t-test.")
    adjustment: Literal["benjamini-hochberg"] = Field(description="How `p_adjusted` corrects for multiple comparisons.")
    alpha: float = Field(description="The false discovery rate `significant` is judged at.")


class DriverFactor(Comparison):
    factor: FactorKind = Field(
        description="touchpoint: visited that touchpoint in the window before answering; interaction_type: had an "
        "interaction of that type in the window; journey_stage: the answered touchpoint's journey stage; "
        "lifecycle_stage, open_deal_value (band), tag: from the CRM's customer projection."
    )
    level: str = Field(
        description="The factor's value: a touchpoint key, an interaction type, a stage, a tag, or a deal band "
        "(none = 0, under_1k, 1k_10k, 10k_100k, 100k_plus)."
    )


class DriverReport(ComparisonReport):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DRIVERS]})

    window_days: int = Field(description="How many days before each answer count as its touchpoint and interaction history.")
    n: int = Field(description="Answers analysed: scored answers of known customers (skipped scores are left out).")
    anonymous: int = Field(description="Scored answers without a customer, left out (they have no history or CRM data).")
    factors: list[DriverFactor] = Field(
        description="Tested levels first, by adjusted p-value then by the size of the effect; then the untested "
        "ones, by factor and level."
    )
