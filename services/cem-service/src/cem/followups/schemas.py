"""Follow-up output shape."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

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
    status: Literal["open", "closed", "cancelled"] = Field(
        description="open until the CRM reports the follow-up task done, then closed; cancelled when the customer was "
        "erased while it was open (never closed then: `closed_at` stays null)."
    )
    created_at: dt.datetime
    closed_at: dt.datetime | None = Field(description="When the CRM task was completed.")
    closed_by: str | None = Field(description="Who completed the CRM task.")
    task_id: uuid.UUID | None = Field(description="The CRM task that closed it.")
    due_at: dt.datetime | None = Field(
        None, description="When it must be closed by (its SLA: the survey's `followup_sla` or `CEM_FOLLOWUP_SLA`)."
    )
    overdue_at: dt.datetime | None = Field(None, description="When it was announced overdue (`followup.overdue`).")


EXAMPLE_ITEM = {
    "id": "5b7d9f1a-3c5e-4a7b-9d1f-3a5c7e9b1d3f",
    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "customer_name": "Ada Lovelace",
    "customer_email": "ada@example.com",
    "response_id": "7e9a1c3e-5a7c-4e9a-8c1e-3a5c7e9a1c3e",
    "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
    "metric": "nps",
    "score": 3,
    "touchpoint": "checkout",
    "reason": "NPS 3 on 0-10 (detractor) in survey 'Checkout NPS'",
    "status": "open",
    "created_at": "2026-12-05T09:30:00Z",
    "closed_at": None,
    "closed_by": None,
    "task_id": None,
    "due_at": "2026-12-06T09:30:00Z",
    "overdue_at": None,
    "overdue": False,
}


class FollowupItem(FollowupRead):
    """A follow-up as `/v1/followups` lists it: with its customer and whether it is late now."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [EXAMPLE_ITEM]})

    customer_id: uuid.UUID = Field(description="The customer who answered (the CRM task is theirs).")
    customer_name: str | None = Field(None, description="Their name as the CRM announced it; null once erased.")
    customer_email: str | None = Field(None, description="Their email as the CRM announced it; null once erased.")
    overdue: bool = Field(
        False,
        description="Open and past `due_at` now (`overdue_at` says when `followup.overdue` announced it; the "
        "scheduler does so on its next round).",
    )
