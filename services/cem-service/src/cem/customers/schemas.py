"""The experience view's shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class CustomerAsAnnounced(BaseModel):
    """The customer as the CRM last announced it on `crm.customers.v1`."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str | None
    name: str | None
    company: str | None
    lifecycle_stage: str | None
    owner: str | None
    tags: list[str]
    survey_opt_out: bool
    open_deal_value: Decimal
    crm_version: int = Field(description="The CRM record version this copy reflects.")
    synced_at: dt.datetime = Field(description="When this copy was last updated from an event.")


class CustomerExperience(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer": {
                        "id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
                        "email": "ada@example.com",
                        "name": "Ada Lovelace",
                        "company": "Analytical Engines Ltd",
                        "lifecycle_stage": "customer",
                        "owner": "sam@yourcompany.example",
                        "tags": ["vip"],
                        "survey_opt_out": False,
                        "open_deal_value": "12000.00",
                        "crm_version": 3,
                        "synced_at": "2026-11-23T10:00:01Z",
                    }
                }
            ]
        }
    )

    customer: CustomerAsAnnounced
