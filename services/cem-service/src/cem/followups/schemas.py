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
    closed_at: dt.datetime | None = Field(description="When the CRM task was completed.")
    closed_by: str | None = Field(description="Who completed the CRM task.")
    task_id: uuid.UUID | None = Field(description="The CRM task that closed it.")
    due_at: dt.datetime | None = Field(
        None, description="When it must be closed by (its SLA: the survey's `followup_sla` or `CEM_FOLLOWUP_SLA`)."
    )
    overdue_at: dt.datetime | None = Field(None, description="When it was announced overdue (`followup.overdue`).")
