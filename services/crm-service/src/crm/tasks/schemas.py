"""Task input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.fields import EXAMPLE_IDS
from cxkit.fields import InputModel, PatchModel, Timestamp, at_least_one_of
from cxkit.http.pagination import Page

TaskStatus = Literal["open", "completed", "cancelled"]
TaskPriority = Literal["low", "normal", "high"]

EXAMPLE = {
    "customer_id": EXAMPLE_IDS["customer"],
    "title": "Call back about the late delivery",
    "description": "Gave NPS 3 after checkout; mentioned shipping.",
    "due_at": "2026-11-25T12:00:00Z",
    "priority": "high",
    "origin": "followup",
    "origin_ref": "b7e9c2d4-1f3a-4c5e-8d7b-9a0c1e2f3d4b",
}
READ_EXAMPLE = {
    **EXAMPLE,
    "id": EXAMPLE_IDS["task"],
    "deal_id": None,
    "status": "open",
    "owner": "sam@yourcompany.example",
    "completed_at": None,
    "completed_by": None,
    "escalated_to": None,
    "escalated_at": None,
    "version": 1,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:00:00Z",
}


class TaskCreate(InputModel):
    """A follow-up for a customer (`customer_id`, or implied by `deal_id`). The owner defaults
    to the customer's owner."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE], **at_least_one_of("customer_id", "deal_id")})

    customer_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None
    title: str = Field(min_length=1, max_length=300)
    description: str | None = Field(None, max_length=10_000)
    due_at: Timestamp | None = None
    priority: TaskPriority = "normal"
    owner: str | None = Field(None, max_length=200)
    origin: str = Field(
        "manual",
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        max_length=100,
        description="Where it came from, e.g. manual, or followup (made from a CEM follow-up request, one per follow-up id).",
    )
    origin_ref: str | None = Field(None, max_length=255, description="An id in the origin, e.g. the CEM follow-up id.")

    @model_validator(mode="after")
    def _has_customer(self) -> TaskCreate:
        if self.customer_id is None and self.deal_id is None:
            raise ValueError("give customer_id or deal_id")
        return self


class TaskUpdate(PatchModel):
    """`status: completed` completes the task (announced as `task.completed`); `open` reopens it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "completed"}, {"due_at": "2026-11-27T09:00:00Z"}]})

    title: str | None = Field(None, min_length=1, max_length=300)
    description: str | None = Field(None, max_length=10_000)
    due_at: Timestamp | None = None
    priority: TaskPriority | None = None
    owner: str | None = Field(None, max_length=200)
    status: TaskStatus | None = None
    deal_id: uuid.UUID | None = None

    not_null = ("title", "priority", "status")


class TaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    customer_id: uuid.UUID
    deal_id: uuid.UUID | None
    title: str
    description: str | None
    due_at: dt.datetime | None
    status: str
    priority: str = Field(description="low, normal or high; urgent once an overdue follow-up escalated it.")
    owner: str | None
    origin: str
    origin_ref: str | None
    completed_at: dt.datetime | None
    completed_by: str | None
    escalated_to: str | None = Field(
        description="A second owner, when the follow-up went past its SLA (`followup.overdue`): `CRM_FOLLOWUP_ESCALATION_OWNER`."
    )
    escalated_at: dt.datetime | None = Field(description="When it was escalated (priority raised to urgent).")
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class TaskPage(Page[TaskRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})
