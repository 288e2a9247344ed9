"""Interaction input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from crm.fields import EXAMPLE_IDS, Currency, DecimalText, FreeJSON, Money
from cxkit.fields import TIME_RANGE, EventTime, InputModel, exactly_one_of
from cxkit.http.pagination import Page

EXAMPLE = {
    "customer_email": "ada@example.com",
    "type": "purchase",
    "channel": "web",
    "touchpoint": "checkout",
    "occurred_at": "2026-11-23T09:30:00Z",
    "summary": "Order #10421: 2 items",
    "amount": "129.90",
    "currency": "EUR",
    "metadata": {"order_id": "10421"},
}
READ_EXAMPLE = {
    **{k: v for k, v in EXAMPLE.items() if k != "customer_email"},
    "id": EXAMPLE_IDS["interaction"],
    "customer_id": EXAMPLE_IDS["customer"],
    "source": "api",
    "recorded_at": "2026-11-23T09:30:01Z",
}


class InteractionCreate(InputModel):
    """Give `customer_id`, or `customer_email`: an unknown email makes a lead-stage customer."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE], **exactly_one_of("customer_id", "customer_email")})

    customer_id: uuid.UUID | None = None
    customer_email: EmailStr | None = None
    type: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="e.g. purchase, support_ticket_closed, call, email, meeting, bill_paid.",
    )
    channel: str | None = Field(None, max_length=100, description="e.g. web, store, phone, email.")
    touchpoint: str | None = Field(None, max_length=100, description="A touchpoint key such as `checkout`.")
    occurred_at: EventTime | None = Field(None, description=f"Default: now. The instant must be {TIME_RANGE}.")
    summary: str | None = Field(None, max_length=10_000)
    amount: Money | None = Field(None, description="For purchases: the order value.")
    currency: Currency | None = None
    metadata: FreeJSON = Field(default_factory=dict, description="Free JSON (at most 16 KiB).")

    @model_validator(mode="after")
    def _one_customer(self) -> InteractionCreate:
        if self.customer_id is None and self.customer_email is None:
            raise ValueError("give customer_id or customer_email")
        if self.customer_id is not None and self.customer_email is not None:
            raise ValueError("give customer_id or customer_email, not both")
        return self


class InteractionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    customer_id: uuid.UUID
    type: str
    channel: str | None
    touchpoint: str | None
    occurred_at: dt.datetime
    summary: str | None
    amount: DecimalText | None
    currency: str | None
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    source: str = Field(description="`api` for HTTP, else the CloudEvents `source` of the system that published it.")
    recorded_at: dt.datetime


class InteractionPage(Page[InteractionRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})
