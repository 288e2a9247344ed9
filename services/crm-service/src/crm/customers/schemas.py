"""Customer input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

LifecycleStage = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "churned"]
Tag = Field(min_length=1, max_length=50)

EXAMPLE = {
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "phone": "+44 20 7946 0018",
    "company": "Analytical Engines Ltd",
    "lifecycle_stage": "lead",
    "owner": "sam@yourcompany.example",
    "tags": ["vip", "newsletter"],
    "attributes": {"plan": "pro"},
    "source": "webshop",
}


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    email: EmailStr = Field(description="Unique, compared case-insensitively.")
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=50)
    company: str | None = Field(None, max_length=200)
    lifecycle_stage: LifecycleStage = "lead"
    owner: str | None = Field(None, max_length=200, description="Who in the company owns this customer.")
    tags: list[str] = Field(default_factory=list, max_length=50)
    attributes: dict[str, Any] = Field(default_factory=dict, description="Free JSON.")
    source: str | None = Field(None, max_length=100)
    campaign_id: uuid.UUID | None = None
    survey_opt_out: bool = Field(False, description="True: never invite this customer to surveys.")


class CustomerRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    **EXAMPLE,
                    "id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
                    "version": 1,
                    "created_at": "2026-11-23T10:00:00Z",
                    "updated_at": "2026-11-23T10:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    email: str | None
    name: str | None
    phone: str | None
    company: str | None
    lifecycle_stage: str
    owner: str | None
    tags: list[str]
    attributes: dict[str, Any]
    source: str | None
    campaign_id: uuid.UUID | None
    survey_opt_out: bool
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    erased_at: dt.datetime | None = None
    merged_into_id: uuid.UUID | None = None
