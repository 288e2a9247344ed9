"""Touchpoint input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cem.fields import Name
from cem.recipients import Recipient
from cxkit.fields import InputModel, PatchModel, Text

EXAMPLE = {
    "key": "checkout",
    "name": "Web shop checkout",
    "channel": "web",
    "journey_stage": "purchase",
    "description": "The last page of the web shop's order flow.",
    "target_metric": "nps",
    "target_score": 40,
}

TARGET_RANGES = {"nps": (-100.0, 100.0), "csat": (0.0, 100.0), "ces": (1.0, 7.0)}
TargetMetric = Literal["nps", "csat", "ces"]


def check_target(metric: str | None, score: float | None) -> str | None:
    """The reason a target is invalid, or None when it is fine."""
    if (score is None) != (metric is None):
        return "target_metric and target_score go together"
    if metric is not None and score is not None:
        low, high = TARGET_RANGES[metric]
        if not low <= score <= high:
            return f"target_score for {metric} must be within {low:g}..{high:g}"
    return None


class TouchpointCreate(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    key: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Unique slug, e.g. `checkout`.")
    name: Name
    channel: Text | None = Field(None, max_length=50, description="e.g. web, store, phone, email, app.")
    journey_stage: Text | None = Field(None, max_length=50, description="e.g. awareness, purchase, onboarding, support.")
    description: Text | None = Field(None, max_length=5000)
    target_metric: TargetMetric | None = Field(None, description="Which score the brand promise is measured in.")
    target_score: float | None = Field(
        None, strict=True, description="The brand promise: NPS -100..100, CSAT % 0..100, CES 1..7."
    )

    @model_validator(mode="after")
    def _target_in_range(self) -> TouchpointCreate:
        problem = check_target(self.target_metric, self.target_score)
        if problem:
            raise ValueError(problem)
        return self


class TouchpointUpdate(PatchModel):
    """Only the fields sent change; send null to clear an optional field. The key never changes:
    answers, invitations and interactions refer to it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Checkout (web shop)", "target_metric": "nps", "target_score": 45}]},
    )

    name: Name | None = None
    channel: Text | None = Field(None, max_length=50)
    journey_stage: Text | None = Field(None, max_length=50)
    description: Text | None = Field(None, max_length=5000)
    target_metric: TargetMetric | None = None
    target_score: float | None = Field(None, allow_inf_nan=False, strict=True)

    not_null = ("name",)


class TouchpointRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    **EXAMPLE,
                    "id": "5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c",
                    "version": 1,
                    "created_at": "2026-11-23T10:00:00Z",
                    "updated_at": "2026-11-23T10:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    key: str
    name: str
    channel: str | None
    journey_stage: str | None
    description: str | None
    target_metric: str | None
    target_score: float | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class StoredInteraction:
    """An interaction `record_interactions` stored (now or before), as the invitation rules judge it."""

    interaction_id: uuid.UUID
    type: str
    touchpoint: str | None
    occurred_at: dt.datetime
    recipient: Recipient
