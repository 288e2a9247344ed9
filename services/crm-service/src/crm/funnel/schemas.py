"""The sales funnel report."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from crm.fields import EXAMPLE_IDS, DecimalText

EXAMPLE = {
    "pipeline_id": EXAMPLE_IDS["pipeline"],
    "pipeline_name": "Sales pipeline",
    "stages": [
        {
            "stage_id": EXAMPLE_IDS["stage"],
            "name": "Qualification",
            "position": 0,
            "probability": "0.100",
            "open_count": 4,
            "amount": "40000.00",
            "weighted_amount": "4000.00",
            "reached": 10,
            "conversion_to_next": 0.6,
            "avg_days_in_stage": 3.5,
        }
    ],
    "open": {"count": 7, "amount": "83000.00", "weighted_amount": "21300.00"},
    "won": {"count": 2, "amount": "30000.00"},
    "lost": {"count": 1, "amount": "5000.00"},
    "win_rate": 0.6667,
}


class FunnelStage(BaseModel):
    stage_id: uuid.UUID
    name: str
    position: int
    probability: DecimalText
    open_count: int = Field(description="Open deals in this stage now.")
    amount: DecimalText = Field(description="Sum of their amounts.")
    weighted_amount: DecimalText = Field(description="amount x the stage's probability.")
    reached: int = Field(
        description="Deals that ever reached this stage or a later one (skipping stages counts as passing them)."
    )
    conversion_to_next: float | None = Field(
        description="Share of `reached` that went on to reach the next stage (after the last open stage: won); "
        "null when no deal reached this stage."
    )
    avg_days_in_stage: float | None = Field(
        description="Average days deals spent in this stage before they moved on (stays still in progress are left "
        "out); null when none has left it yet."
    )


class OpenTotals(BaseModel):
    count: int
    amount: DecimalText
    weighted_amount: DecimalText = Field(description="The forecast: sum over stages of amount x probability.")


class ClosedTotals(BaseModel):
    count: int
    amount: DecimalText


class Funnel(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    pipeline_id: uuid.UUID
    pipeline_name: str
    stages: list[FunnelStage] = Field(description="The open stages, in pipeline order.")
    open: OpenTotals
    won: ClosedTotals
    lost: ClosedTotals
    win_rate: float | None = Field(description="won / (won + lost), by count; null before any deal closed.")
    generated_at: dt.datetime | None = None


# --- the forecast ----------------------------------------------------------------------------

ForecastInterval = Literal["week", "month", "quarter"]

FORECAST_EXAMPLE = {
    "pipeline_id": EXAMPLE_IDS["pipeline"],
    "pipeline_name": "Sales pipeline",
    "interval": "month",
    "owner": None,
    "currency": "EUR",
    "as_of": "2026-12-05",
    "periods": [
        {
            "start": "2026-12-01",
            "end": "2027-01-01",
            "expected": {"count": 5, "amount": "61000.00", "weighted_amount": "24400.00"},
            "won": {"count": 2, "amount": "18000.00"},
            "lost": {"count": 1, "amount": "4000.00"},
        },
        {
            "start": "2027-01-01",
            "end": "2027-02-01",
            "expected": {"count": 3, "amount": "22000.00", "weighted_amount": "4400.00"},
            "won": {"count": 0, "amount": "0.00"},
            "lost": {"count": 0, "amount": "0.00"},
        },
    ],
    "overdue": {"count": 2, "amount": "9000.00", "weighted_amount": "5400.00"},
    "undated": {"count": 4, "amount": "30000.00", "weighted_amount": "3000.00"},
}


class ForecastPeriod(BaseModel):
    start: dt.date = Field(description="First day of the period (weeks start on Monday).")
    end: dt.date = Field(description="First day of the next period.")
    expected: OpenTotals = Field(
        description="Open deals expected to close in the period (`expected_close_date`), at their stage's probability."
    )
    won: ClosedTotals = Field(description="Deals won in the period (UTC day of `closed_at`).")
    lost: ClosedTotals = Field(description="Deals lost in the period.")


class Forecast(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [FORECAST_EXAMPLE]})

    pipeline_id: uuid.UUID
    pipeline_name: str
    interval: ForecastInterval
    owner: str | None
    currency: str | None
    as_of: dt.date = Field(description="Today (UTC): open deals expected to close before it are `overdue`.")
    periods: list[ForecastPeriod]
    overdue: OpenTotals = Field(
        description="Open deals whose expected close date has passed, wherever it lies (those in past periods above too)."
    )
    undated: OpenTotals = Field(description="Open deals with no expected close date.")
