"""Follow-up output shape."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field


class FollowupRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    response_id: uuid.UUID
    survey_id: uuid.UUID
    metric: str
    score: int
    touchpoint: str | None
    reason: str
    status: str = Field(description="open until the CRM reports the follow-up task done, then closed.")
    created_at: dt.datetime
    closed_at: dt.datetime | None
