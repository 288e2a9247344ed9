"""Journey input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cem.fields import Name
from cxkit.fields import InputModel, NoNul, PatchModel, Text

TouchpointRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NoNul]

EXAMPLE_STAGES = [
    {"name": "Purchase", "description": "Choosing and paying.", "touchpoints": ["product-page", "checkout"]},
    {"name": "Delivery", "touchpoints": ["delivery"]},
    {"name": "Support", "touchpoints": ["support-call", "5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c"]},
]


class StageInput(InputModel):
    name: Annotated[Name, Field(max_length=100, description="Unique within the journey, e.g. `Purchase`.")]
    description: Text | None = Field(None, max_length=2000)
    touchpoints: list[TouchpointRef] = Field(
        default_factory=list,
        max_length=100,
        description="Touchpoints in the order customers meet them, each by key or id (one that reads as a UUID is "
        "the touchpoint with that id, else the one with that key); a touchpoint appears once per journey.",
    )


class JourneyCreate(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "Online order", "description": "From browsing to support.", "stages": EXAMPLE_STAGES}]
        },
    )

    name: Name
    description: Text | None = Field(None, max_length=5000)
    stages: list[StageInput] = Field(default_factory=list, max_length=50, description="Stages in order.")


class JourneyUpdate(PatchModel):
    """Only the fields sent change. `stages`, when sent, replaces every stage in the order given
    (this is how stages and touchpoints are reordered)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"stages": [EXAMPLE_STAGES[1], EXAMPLE_STAGES[0]]}, {"name": "Web shop order", "description": None}]
        },
    )

    name: Name | None = None
    description: Text | None = Field(None, max_length=5000)
    stages: list[StageInput] | None = Field(None, max_length=50)

    not_null = ("name", "stages")


class JourneyTouchpoint(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    name: str
    channel: str | None
    target_metric: str | None
    target_score: float | None


class StageRead(BaseModel):
    name: str
    description: str | None
    touchpoints: list[JourneyTouchpoint]


EXAMPLE_READ = {
    "id": "8a1e3c52-6b0f-4d7e-9f2a-1c3b5d7e9f01",
    "name": "Online order",
    "description": "From browsing to support.",
    "stages": [
        {
            "name": "Purchase",
            "description": "Choosing and paying.",
            "touchpoints": [
                {
                    "id": "5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c",
                    "key": "checkout",
                    "name": "Web shop checkout",
                    "channel": "web",
                    "target_metric": "nps",
                    "target_score": 40,
                }
            ],
        }
    ],
    "version": 2,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T11:30:00Z",
}


class JourneyRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_READ]})

    id: uuid.UUID
    name: str
    description: str | None
    stages: list[StageRead]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
