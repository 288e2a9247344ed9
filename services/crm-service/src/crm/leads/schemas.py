"""Lead input and output shapes, and the conversion of a lead."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from crm.customers.schemas import READ_EXAMPLE as CUSTOMER_EXAMPLE
from crm.customers.schemas import CustomerRead, LifecycleStage
from crm.deals.schemas import READ_EXAMPLE as DEAL_EXAMPLE
from crm.deals.schemas import DealRead
from crm.fields import EXAMPLE_IDS, Currency, Money
from cxkit.fields import Day, InputModel, Integer, JsonInteger, PatchModel, at_least_one_of
from cxkit.http.pagination import Page

LeadStatus = Literal["new", "working", "qualified", "disqualified"]

EXAMPLE = {
    "email": "grace@example.com",
    "name": "Grace Hopper",
    "company": "Navy Computing Lab",
    "phone": "+1 202 555 0147",
    "job_title": "Head of Engineering",
    "source": "webinar",
    "campaign_id": EXAMPLE_IDS["campaign"],
    "status": "new",
    "score": 40,
    "owner": "sam@yourcompany.example",
}
READ_EXAMPLE = {
    **EXAMPLE,
    "id": EXAMPLE_IDS["lead"],
    "notes": None,
    "disqualified_reason": None,
    "converted_at": None,
    "converted_customer_id": None,
    "converted_deal_id": None,
    "version": 1,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:00:00Z",
}


class LeadCreate(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE], **at_least_one_of("email", "name")})

    email: EmailStr | None = None
    name: str | None = Field(None, min_length=1, max_length=200)
    company: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=50)
    job_title: str | None = Field(None, max_length=200)
    source: str | None = Field(None, max_length=100)
    campaign_id: uuid.UUID | None = Field(None, description="The campaign the lead came from (must exist).")
    status: LeadStatus = "new"
    score: Integer = Field(0, ge=0, le=100, description="0..100, higher is hotter.")
    owner: str | None = Field(None, max_length=200)
    notes: str | None = Field(None, max_length=10_000)
    disqualified_reason: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _identifiable(self) -> LeadCreate:
        if not self.email and not self.name:
            raise ValueError("a lead needs an email or a name")
        return self


class LeadUpdate(PatchModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "working", "score": 65}]})

    email: EmailStr | None = None
    name: str | None = Field(None, min_length=1, max_length=200)
    company: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=50)
    job_title: str | None = Field(None, max_length=200)
    source: str | None = Field(None, max_length=100)
    campaign_id: uuid.UUID | None = None
    status: LeadStatus | None = None
    score: Annotated[int, Field(ge=0, le=100), JsonInteger] | None = None
    owner: str | None = Field(None, max_length=200)
    notes: str | None = Field(None, max_length=10_000)
    disqualified_reason: str | None = Field(None, max_length=500)

    not_null = ("status", "score")


class LeadRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    email: str | None
    name: str | None
    company: str | None
    phone: str | None
    job_title: str | None
    source: str | None
    campaign_id: uuid.UUID | None
    status: str
    score: int
    owner: str | None
    notes: str | None
    disqualified_reason: str | None
    converted_at: dt.datetime | None
    converted_customer_id: uuid.UUID | None
    converted_deal_id: uuid.UUID | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class LeadPage(Page[LeadRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})


class ConversionDeal(InputModel):
    title: str = Field(min_length=1, max_length=200)
    amount: Money | None = None
    currency: Currency | None = None
    pipeline_id: uuid.UUID | None = Field(None, description="Defaults to the default pipeline.")
    stage: str | None = Field(None, min_length=1, max_length=100, description="Defaults to the first stage.")
    expected_close_date: Day | None = None
    lost_reason: str | None = Field(None, min_length=1, max_length=500, description="Required when opened in the lost stage.")


class LeadConvert(InputModel):
    """Without `customer_id` the lead's email finds a customer (case-insensitive) or a new one
    is made from the lead; with `deal`, a deal is opened for that customer, all in one
    transaction."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"deal": {"title": "Pilot, 10 seats", "amount": "9000.00", "stage": "Needs analysis"}}, {}]
        }
    )

    customer_id: uuid.UUID | None = Field(None, description="Link to this existing customer instead.")
    lifecycle_stage: LifecycleStage | None = Field(
        None,
        description="The stage the customer goes to, even with a `deal` (which then moves it no further). Default: "
        "`sql` without a deal; with one, `opportunity` (`customer` if the deal is won). An existing customer only moves "
        "forward (`churned` is not forward: it keeps its stage).",
    )
    deal: ConversionDeal | None = None


class LeadConversion(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "lead": {**READ_EXAMPLE, "status": "qualified", "converted_at": "2026-11-24T09:00:00Z"},
                    "customer": CUSTOMER_EXAMPLE,
                    "customer_created": True,
                    "deal": DEAL_EXAMPLE,
                }
            ]
        }
    )

    lead: LeadRead
    customer: CustomerRead
    customer_created: bool
    deal: DealRead | None
