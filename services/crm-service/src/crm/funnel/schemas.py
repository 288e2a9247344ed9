"""The sales funnel report."""

from __future__ import annotations

import datetime as dt
import uuid

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
