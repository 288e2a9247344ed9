"""Campaign and campaign-member input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.fields import EXAMPLE_IDS, Currency, DecimalText, Money
from cxkit.fields import Day, InputModel, PatchModel, Timestamp, exactly_one_of
from cxkit.http.pagination import Page

CampaignKind = Literal["email", "event", "webinar", "ads", "social", "content", "referral", "other"]
CampaignStatus = Literal["planned", "active", "completed", "aborted"]

EXAMPLE = {
    "name": "Winter webinar 2026",
    "kind": "webinar",
    "status": "active",
    "description": "Live demo of the new analytics module.",
    "owner": "marketing@yourcompany.example",
    "start_date": "2026-12-01",
    "end_date": "2026-12-15",
    "budget": "5000.00",
    "currency": "EUR",
}
STATS_EXAMPLE = {
    "members": 200,
    "responded": 30,
    "response_rate": 0.15,
    "leads": 25,
    "customers": 12,
    "won_amount": "48000.00",
}
READ_EXAMPLE = {
    **EXAMPLE,
    "id": EXAMPLE_IDS["campaign"],
    "stats": STATS_EXAMPLE,
    "version": 1,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:00:00Z",
}
MEMBER_EXAMPLE = {
    "id": EXAMPLE_IDS["member"],
    "campaign_id": EXAMPLE_IDS["campaign"],
    "customer_id": EXAMPLE_IDS["customer"],
    "lead_id": None,
    "responded": True,
    "responded_at": "2026-12-03T17:45:00Z",
    "response": "registered",
    "added_at": "2026-11-25T08:00:00Z",
}


def _dates_in_order(start: dt.date | None, end: dt.date | None) -> None:
    if start and end and end < start:
        raise ValueError("end_date is before start_date")


class CampaignCreate(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    name: str = Field(min_length=1, max_length=200, description="Unique.")
    kind: CampaignKind = "other"
    status: CampaignStatus = "planned"
    description: str | None = Field(None, max_length=10_000)
    owner: str | None = Field(None, max_length=200)
    start_date: Day | None = None
    end_date: Day | None = None
    budget: Money | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _valid(self) -> CampaignCreate:
        _dates_in_order(self.start_date, self.end_date)
        return self


class CampaignUpdate(PatchModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "completed", "end_date": "2026-12-16"}]})

    name: str | None = Field(None, min_length=1, max_length=200)
    kind: CampaignKind | None = None
    status: CampaignStatus | None = None
    description: str | None = Field(None, max_length=10_000)
    owner: str | None = Field(None, max_length=200)
    start_date: Day | None = None
    end_date: Day | None = None
    budget: Money | None = None
    currency: Currency | None = None

    not_null = ("name", "kind", "status")


class CampaignStats(BaseModel):
    members: int = Field(description="Customers and leads targeted.")
    responded: int = Field(description="Members that responded.")
    response_rate: float | None = Field(description="responded / members; null without members.")
    leads: int = Field(description="Leads that came from the campaign.")
    customers: int = Field(description="Customers that came from the campaign.")
    won_amount: DecimalText = Field(description="Won deal amounts of customers that came from the campaign (as stored).")


class CampaignRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    name: str
    kind: str
    status: str
    description: str | None
    owner: str | None
    start_date: dt.date | None
    end_date: dt.date | None
    budget: DecimalText | None
    currency: str | None
    stats: CampaignStats
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class CampaignPage(Page[CampaignRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})


class MemberCreate(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"customer_id": EXAMPLE_IDS["customer"]}, {"lead_id": EXAMPLE_IDS["lead"], "response": "registered"}],
            **exactly_one_of("customer_id", "lead_id"),
        }
    )

    customer_id: uuid.UUID | None = None
    lead_id: uuid.UUID | None = None
    response: str | None = Field(None, min_length=1, max_length=100, description="Given: the member has already responded.")

    @model_validator(mode="after")
    def _one_member(self) -> MemberCreate:
        if (self.customer_id is None) == (self.lead_id is None):
            raise ValueError("give exactly one of customer_id and lead_id")
        return self


class MemberResponse(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"response": "registered"}]})

    response: str = Field(min_length=1, max_length=100, description="What they did, e.g. opened, clicked, registered, attended.")
    responded_at: Timestamp | None = Field(None, description="Default: now.")


class MemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [MEMBER_EXAMPLE]})

    id: uuid.UUID
    campaign_id: uuid.UUID
    customer_id: uuid.UUID | None
    lead_id: uuid.UUID | None
    responded: bool
    responded_at: dt.datetime | None
    response: str | None
    added_at: dt.datetime

    @classmethod
    def of(cls, member: object) -> MemberRead:
        return cls.model_validate(
            {**{k: getattr(member, k) for k in _MEMBER_FIELDS}, "responded": member.responded_at is not None}
        )  # type: ignore[attr-defined]


_MEMBER_FIELDS = ("id", "campaign_id", "customer_id", "lead_id", "responded_at", "response", "added_at")


class MemberPage(Page[MemberRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [MEMBER_EXAMPLE], "next_cursor": None}]})
