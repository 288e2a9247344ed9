"""Analytics output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Interval = Literal["day", "week", "month"]


class Interval95(BaseModel):
    low: float
    high: float


class SeriesPoint(BaseModel):
    start: dt.datetime = Field(description="Start of the bucket (UTC; weeks start on Monday).")
    n: int = Field(description="Answers counted (skipped ones are not).")
    skipped: int = Field(description="Responses that left the score question unanswered.")
    score: float | None = Field(description="The metric for the bucket; null without answers.")
    mean: float | None = Field(description="Average score on the metric's scale.")
    ci95: Interval95 | None = Field(description="95% confidence interval of `score`; null when it cannot be estimated.")
    counts: dict[str, int] = Field(description="Answers per category.")


class ResponseRate(BaseModel):
    invitations: int = Field(description="Invitations made in the window (to surveys measuring this metric).")
    responded: int = Field(description="Of those, how many were answered.")
    rate: float | None = Field(description="responded / invitations (0-1); null without invitations.")


class Filters(BaseModel):
    survey_id: uuid.UUID | None
    touchpoint: str | None
    from_: dt.datetime | None = Field(alias="from")
    to: dt.datetime | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class Scale(BaseModel):
    min: int
    max: int


EXAMPLE_NPS = {
    "metric": "nps",
    "definition": "NPS = % promoters (9-10) - % detractors (0-6), from -100 to 100.",
    "scale": {"min": 0, "max": 10},
    "filters": {"survey_id": None, "touchpoint": "checkout", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
    "interval": "week",
    "n": 5,
    "skipped": 1,
    "score": 20.0,
    "mean": 7.6,
    "ci95": {"low": -53.53, "high": 93.53},
    "counts": {"promoter": 2, "passive": 2, "detractor": 1},
    "response_rate": {"invitations": 12, "responded": 6, "rate": 0.5},
    "series": [
        {
            "start": "2026-11-02T00:00:00Z",
            "n": 3,
            "skipped": 0,
            "score": 33.3333,
            "mean": 8.0,
            "ci95": {"low": -59.0, "high": 100.0},
            "counts": {"promoter": 2, "passive": 0, "detractor": 1},
        }
    ],
}


class MetricReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_NPS]})

    metric: str
    definition: str = Field(description="How `score` is computed.")
    scale: Scale
    filters: Filters
    interval: Interval
    n: int = Field(description="Answers counted; skipped answers are left out of this denominator.")
    skipped: int = Field(description="Responses in the window that skipped the score question.")
    score: float | None = Field(description="NPS (-100..100), CSAT (% 0..100) or CES (mean 1..7); null without answers.")
    mean: float | None = Field(description="Average score on the metric's scale.")
    ci95: Interval95 | None
    counts: dict[str, int] = Field(
        description="Answers per category: nps promoter/passive/detractor; csat and ces positive/neutral/negative."
    )
    response_rate: ResponseRate
    series: list[SeriesPoint] = Field(description="One point per interval that has responses, oldest first.")


class MetricSummary(BaseModel):
    n: int
    score: float | None
    ci95: Interval95 | None


class Target(BaseModel):
    metric: str
    score: float


EXAMPLE_TOUCHPOINT = {
    "touchpoint": "checkout",
    "name": "Web shop checkout",
    "journey_stage": "purchase",
    "channel": "web",
    "interactions": 1200,
    "invitations": 300,
    "responses": 96,
    "response_rate": 0.32,
    "nps": {"n": 90, "score": 31.1, "ci95": {"low": 14.2, "high": 48.0}},
    "csat": {"n": 0, "score": None, "ci95": None},
    "ces": {"n": 0, "score": None, "ci95": None},
    "target": {"metric": "nps", "score": 40},
    "gap": -8.9,
}


class TouchpointReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_TOUCHPOINT]})

    touchpoint: str = Field(description="The touchpoint's key.")
    name: str
    journey_stage: str | None
    channel: str | None
    interactions: int = Field(description="Interactions at this touchpoint in the window (from `cx.interactions.v1`).")
    invitations: int
    responses: int
    response_rate: float | None = Field(description="Answered invitations / invitations (0-1).")
    nps: MetricSummary
    csat: MetricSummary
    ces: MetricSummary
    target: Target | None = Field(description="The brand promise, if the touchpoint has one.")
    gap: float | None = Field(
        description="Score minus target in the target's metric (higher is better for all three): negative means "
        "the promise is not met. Null without a target or without answers."
    )


class RecoveryCounts(BaseModel):
    detractors: int = Field(description="Follow-ups raised for detractor answers (NPS 0-6, CSAT 1-2, CES 1-2).")
    followed_up: int = Field(description="Of those, how many the CRM reported done (the follow-up task was completed).")
    answered_again: int = Field(description="Of those followed up, how many answered the same metric again afterwards.")
    recovered: int = Field(
        description="Of those followed up, how many answered better next time: NPS 7 or more, CSAT or CES 3 or more."
    )
    followup_rate: float | None = Field(description="followed_up / detractors (0-1); null without detractors.")
    recovery_rate: float | None = Field(description="recovered / followed_up (0-1); null when nobody was followed up.")


class RecoveryFilters(BaseModel):
    survey_id: uuid.UUID | None
    touchpoint: str | None
    from_: dt.datetime | None = Field(alias="from")
    to: dt.datetime | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


EXAMPLE_RECOVERY_COUNTS = {
    "detractors": 12,
    "followed_up": 10,
    "answered_again": 6,
    "recovered": 4,
    "followup_rate": 0.8333,
    "recovery_rate": 0.4,
}


class RecoveryReport(RecoveryCounts):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "definition": "Detractor follow-ups raised in the window; followed up = the CRM task was completed; "
                    "recovered = the customer's next answer to the same metric after that was better.",
                    "filters": {"survey_id": None, "touchpoint": "checkout", "from": "2026-11-01T00:00:00Z", "to": None},
                    **EXAMPLE_RECOVERY_COUNTS,
                    "by_metric": {"nps": EXAMPLE_RECOVERY_COUNTS},
                }
            ]
        }
    )

    definition: str = Field(description="How the numbers are counted.")
    filters: RecoveryFilters
    by_metric: dict[str, RecoveryCounts] = Field(description="The same counts per metric (nps, csat, ces) that has follow-ups.")


class SuppressionReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "filters": {"survey_id": None, "touchpoint": None, "from": "2026-11-01T00:00:00Z", "to": None},
                    "total": 17,
                    "reasons": {"opted_out": 2, "erased": 0, "survey_throttle": 11, "fatigue": 4},
                }
            ]
        }
    )

    filters: RecoveryFilters
    total: int = Field(description="Invitations suppressed in the window.")
    reasons: dict[str, int] = Field(description="Per reason: opted_out, erased, survey_throttle, fatigue.")
