"""Suppression output shape."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SuppressionReason = Literal["opted_out", "erased", "survey_throttle", "fatigue"]

EXAMPLE_READ = {
    "id": "4a6c8e0f-2b4d-4f6a-8c0e-2b4d6f8a0c2e",
    "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "email": None,
    "interaction_id": "6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c",
    "invitation_id": None,
    "touchpoint": "checkout",
    "origin": "trigger",
    "reason": "survey_throttle",
    "created_at": "2026-11-24T09:30:00Z",
}


class SuppressionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [EXAMPLE_READ]})

    id: uuid.UUID
    survey_id: uuid.UUID
    customer_id: uuid.UUID | None
    email: str | None = Field(description="The address, when nobody was announced with it yet.")
    interaction_id: uuid.UUID | None = Field(description="The interaction that would have sent the survey.")
    invitation_id: uuid.UUID | None = Field(
        description="The scheduled invitation cancelled when it fell due, or the invitation whose reminder was suppressed."
    )
    touchpoint: str | None
    origin: str = Field(
        description="trigger (an interaction), recurrence (the survey came round), schedule (a delayed invitation fell "
        "due), reminder (a reminder of an invitation not answered yet) or followup (the re-survey after a follow-up)."
    )
    reason: SuppressionReason = Field(
        description="opted_out (the customer opted out of surveys), erased (their personal data was erased), "
        "survey_throttle (this survey invited them within its `throttle_days`) or fatigue (any survey invited "
        "them within `CEM_FATIGUE_DAYS`)."
    )
    created_at: dt.datetime


EXAMPLE_OPT_OUT = {
    "id": "7c9e1a3b-5d7f-4a1c-9e3b-5d7f9a1c3e5b",
    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
    "invitation_id": "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
    "covers_address": True,
    "created_at": "2026-12-06T08:15:00Z",
}


class OptOutRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [EXAMPLE_OPT_OUT]})

    id: uuid.UUID
    customer_id: uuid.UUID | None = Field(
        description="The customer the invitation went to (their `survey_opt_out` is set); null for a bare address."
    )
    survey_id: uuid.UUID = Field(description="The survey whose link was used.")
    invitation_id: uuid.UUID = Field(description="The invitation whose link was used.")
    covers_address: bool = Field(
        description="The address is kept (as its SHA-256, never in the clear), so it is not invited again under any "
        "customer, after an erasure too. False when the invitation's recipient had no address."
    )
    created_at: dt.datetime = Field(description="When the recipient opted out.")
