"""Touchpoint input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class TouchpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    key: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Unique slug, e.g. `checkout`.")
    name: str = Field(min_length=1, max_length=200)
    channel: str | None = Field(None, max_length=50, description="e.g. web, store, phone, email, app.")
    journey_stage: str | None = Field(None, max_length=50, description="e.g. awareness, purchase, onboarding, support.")
    description: str | None = Field(None, max_length=5000)
    target_metric: Literal["nps", "csat", "ces"] | None = Field(None, description="Which score the brand promise is measured in.")
    target_score: float | None = Field(None, description="The brand promise: NPS -100..100, CSAT % 0..100, CES 1..7.")

    @model_validator(mode="after")
    def _target_in_range(self) -> TouchpointCreate:
        if (self.target_score is None) != (self.target_metric is None):
            raise ValueError("target_metric and target_score go together")
        if self.target_metric is not None and self.target_score is not None:
            low, high = TARGET_RANGES[self.target_metric]
            if not low <= self.target_score <= high:
                raise ValueError(f"target_score for {self.target_metric} must be within {low}..{high}")
        return self


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
