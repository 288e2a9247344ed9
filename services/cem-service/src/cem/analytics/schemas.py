"""Analytics output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from cem.analytics import stats
from cem.report_filters import ReportFilters

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


class ReminderAnswers(BaseModel):
    reminder: int = Field(description="The reminder: 1 for the first.")
    reminded: int = Field(description="Invitations that were sent this reminder.")
    answers: int = Field(description="Of those, how many were answered after it (before any next one).")


class ResponseRate(BaseModel):
    invitations: int = Field(description="Invitations made in the window (to surveys measuring this metric).")
    responded: int = Field(description="Of those, how many were answered.")
    rate: float | None = Field(description="responded / invitations (0-1); null without invitations.")
    answered_before_reminders: int = Field(0, description="Answers that came before any reminder.")
    answered_after_reminder: list[ReminderAnswers] = Field(
        default_factory=list,
        description="Per reminder sent (a survey's `reminders`), how many invitations got it and how many were "
        "answered after it; empty when no reminder went out.",
    )


class _FiltersEcho(BaseModel):
    survey_id: uuid.UUID | None
    touchpoint: str | None
    from_: dt.datetime | None = Field(alias="from")
    to: dt.datetime | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @classmethod
    def of(cls, filters: ReportFilters) -> Self:
        """The filters a report was made with, as it says them."""
        return cls(survey_id=filters.survey_id, touchpoint=filters.touchpoint, from_=filters.since, to=filters.until)


class Filters(_FiltersEcho):
    pass


class Scale(BaseModel):
    min: int
    max: int


def _nps_example(promoters: int, passives: int, detractors: int, *, skipped: int, mean: float) -> dict[str, Any]:
    """An example's counts with their `score` and `ci95` by the report's own formula and rounding
    (so the documented numbers cannot drift from what the code answers)."""
    score, ci = stats.nps(promoters, passives, detractors)
    return {
        "n": promoters + passives + detractors,
        "skipped": skipped,
        "score": stats.rounded(score),
        "mean": mean,
        "ci95": None if ci is None else {"low": stats.rounded(ci[0]), "high": stats.rounded(ci[1])},
        "counts": {"promoter": promoters, "passive": passives, "detractor": detractors},
    }


EXAMPLE_NPS = {
    "metric": "nps",
    "definition": "NPS = % promoters (9-10) - % detractors (0-6), from -100 to 100.",
    "scale": {"min": 0, "max": 10},
    "filters": {"survey_id": None, "touchpoint": "checkout", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
    "interval": "week",
    # Scores 10, 9, 8, 7, 4: NPS 20, ci95 -45.5941..85.5941.
    **_nps_example(2, 2, 1, skipped=1, mean=7.6),
    "response_rate": {
        "invitations": 12,
        "responded": 6,
        "rate": 0.5,
        "answered_before_reminders": 3,
        "answered_after_reminder": [{"reminder": 1, "reminded": 9, "answers": 2}, {"reminder": 2, "reminded": 7, "answers": 1}],
    },
    "series": [
        {
            "start": "2026-11-02T00:00:00Z",
            # Scores 10, 10, 4: NPS 33.3333, ci95 -73.3556..100 (cut at 100).
            **_nps_example(2, 0, 1, skipped=0, mean=8.0),
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
    ci95: Interval95 | None = Field(
        description="95% confidence interval of `score` (NPS: multinomial normal, CSAT: Wilson, CES: mean ± 1.96 "
        "sd/√n), cut at the score's range; null without answers, and for NPS and CES with one."
    )
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


class RecoveryFilters(_FiltersEcho):
    pass


EXAMPLE_RECOVERY_COUNTS = {
    "detractors": 12,
    "followed_up": 10,
    "answered_again": 6,
    "recovered": 4,
    "followup_rate": 0.8333,
    "recovery_rate": 0.4,
}


class DurationStats(BaseModel):
    n: int = Field(description="Follow-ups that got there.")
    median_hours: float | None = Field(description="Median hours from raising; null when n is 0.")
    p90_hours: float | None = Field(description="90th percentile of the hours (interpolated); null when n is 0.")


class SlaShare(BaseModel):
    due: int = Field(
        description="Follow-ups with a due time that passed, or closed: those whose SLA is settled (a cancelled one, its "
        "customer erased while it was open, never is)."
    )
    within: int = Field(description="Of those, how many were closed by their due time.")
    share: float | None = Field(description="within / due (0-1); null when none is settled.")


class RecoveryTiming(BaseModel):
    followups: int = Field(description="Follow-ups raised.")
    time_to_first_action: DurationStats = Field(
        description="From raising to the first action: the first interaction with the customer of a type in "
        "`CEM_FOLLOWUP_ACTION_TYPES` (a call, an email...), or the close if that came first."
    )
    time_to_close: DurationStats = Field(description="From raising to the CRM reporting the task done.")
    within_sla: SlaShare = Field(description="Closed within the SLA (the survey's `followup_sla` or `CEM_FOLLOWUP_SLA`).")


class RecoveryPeriod(RecoveryTiming):
    start: dt.datetime = Field(description="Start of the period the follow-ups were raised in (UTC).")


EXAMPLE_TIMING = {
    "followups": 12,
    "time_to_first_action": {"n": 11, "median_hours": 3.5, "p90_hours": 20.25},
    "time_to_close": {"n": 10, "median_hours": 18.0, "p90_hours": 40.6},
    "within_sla": {"due": 11, "within": 8, "share": 0.7273},
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
                    "interval": "week",
                    "timing": EXAMPLE_TIMING,
                    "periods": [{"start": "2026-11-02T00:00:00Z", **EXAMPLE_TIMING}],
                }
            ]
        }
    )

    definition: str = Field(description="How the numbers are counted.")
    filters: RecoveryFilters
    by_metric: dict[str, RecoveryCounts] = Field(description="The same counts per metric (nps, csat, ces) that has follow-ups.")
    interval: Interval = Field(description="The size of `periods`.")
    timing: RecoveryTiming = Field(description="Time to first action, time to close and the share closed within SLA.")
    periods: list[RecoveryPeriod] = Field(
        description="The same timings per period the follow-ups were raised in, oldest first (periods without any left out)."
    )


class SuppressionReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "filters": {"survey_id": None, "touchpoint": None, "from": "2026-11-01T00:00:00Z", "to": None},
                    "total": 17,
                    "reasons": {"opted_out": 2, "erased": 0, "survey_throttle": 11, "fatigue": 4},
                    "opt_outs": 3,
                }
            ]
        }
    )

    filters: RecoveryFilters
    total: int = Field(description="Invitations suppressed in the window.")
    reasons: dict[str, int] = Field(description="Per reason: opted_out, erased, survey_throttle, fatigue.")
    opt_outs: int = Field(
        description="Recipients who asked in the window, from a link of an invitation to the survey (at the "
        "touchpoint), for no more surveys and have not undone it (`/v1/opt-outs` lists them): why later "
        "invitations to them are suppressed as opted_out."
    )


EXAMPLE_JOURNEY_STAGE = {
    "name": "Purchase",
    "touchpoints": ["checkout", "payment"],
    "visits": 5400,
    "anonymous_visits": 310,
    "customers": 2900,
    "reached_next": 1740,
    "conversion_to_next": 0.6,
    "median_days_to_next": 2.5,
    "nps": {"n": 410, "score": 31.1, "ci95": {"low": 24.0, "high": 38.2}},
    "csat": {"n": 0, "score": None, "ci95": None},
    "ces": {"n": 120, "score": 5.4, "ci95": {"low": 5.1, "high": 5.7}},
}
EXAMPLE_JOURNEY = {
    "journey_id": "8a1e3c52-6b0f-4d7e-9f2a-1c3b5d7e9f01",
    "name": "Online order",
    "filters": {"survey_id": None, "touchpoint": None, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
    "customers": 4100,
    "stages": [
        EXAMPLE_JOURNEY_STAGE,
        {
            **EXAMPLE_JOURNEY_STAGE,
            "name": "Support",
            "touchpoints": ["support-chat"],
            "visits": 2100,
            "anonymous_visits": 0,
            "customers": 1900,
            "reached_next": 0,
            "conversion_to_next": None,
            "median_days_to_next": None,
        },
    ],
}


class JourneyStageReport(BaseModel):
    name: str
    touchpoints: list[str] = Field(description="The keys of the stage's touchpoints, in order.")
    visits: int = Field(description="Interactions at the stage's touchpoints in the window.")
    anonymous_visits: int = Field(
        description="Of those, how many were by no known customer (an address the CEM knows no customer by): they are "
        "not in `customers`."
    )
    customers: int = Field(description="Known customers who visited the stage in the window.")
    reached_next: int = Field(
        description="Of those, how many visited the next stage at or after their first visit of this one (0 for the last)."
    )
    conversion_to_next: float | None = Field(description="reached_next / customers (0-1); null for the last stage or nobody.")
    median_days_to_next: float | None = Field(
        description="Median days from a customer's first visit of this stage to their first visit of the next, over "
        "those whose first visit there came later."
    )
    nps: MetricSummary = Field(description="Answers about the stage's touchpoints in the window.")
    csat: MetricSummary
    ces: MetricSummary


class JourneyReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_JOURNEY]})

    journey_id: uuid.UUID
    name: str
    filters: Filters
    customers: int = Field(description="Known customers who visited any stage of the journey in the window.")
    stages: list[JourneyStageReport] = Field(description="In the journey's order.")
