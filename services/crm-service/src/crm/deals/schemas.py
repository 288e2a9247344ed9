"""Deal input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.fields import EXAMPLE_IDS, Currency, DecimalText, Money
from cxkit.fields import Day, InputModel, PatchModel
from cxkit.http.pagination import Page

DealStatus = Literal["open", "won", "lost"]

EXAMPLE = {
    "customer_id": EXAMPLE_IDS["customer"],
    "title": "Analytical Engine, 3 seats",
    "amount": "12500.00",
    "currency": "EUR",
    "stage": "Qualification",
    "expected_close_date": "2026-12-31",
    "owner": "sam@yourcompany.example",
}
READ_EXAMPLE = {
    **EXAMPLE,
    "id": EXAMPLE_IDS["deal"],
    "pipeline_id": EXAMPLE_IDS["pipeline"],
    "stage_id": EXAMPLE_IDS["stage"],
    "probability": "0.100",
    "status": "open",
    "lost_reason": None,
    "closed_at": None,
    "stage_entered_at": "2026-11-23T10:00:00Z",
    "version": 1,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:00:00Z",
}
HISTORY_EXAMPLE = {
    "id": "0e1d2c3b-4a59-4687-9f0e-1d2c3b4a5968",
    "deal_id": EXAMPLE_IDS["deal"],
    "seq": 2,
    "pipeline_id": EXAMPLE_IDS["pipeline"],
    "from_stage": "Qualification",
    "to_stage": "Proposal",
    "to_status": "open",
    "amount": "12500.00",
    "changed_by": "sales-frontend",
    "changed_at": "2026-11-30T09:12:00Z",
}


class DealCreate(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    customer_id: uuid.UUID
    title: str = Field(min_length=1, max_length=200)
    amount: Money | None = None
    currency: Currency | None = Field(None, description="Defaults to the service's default currency.")
    pipeline_id: uuid.UUID | None = Field(None, description="Defaults to the default pipeline.")
    stage: str | None = Field(None, min_length=1, max_length=100, description="Stage name; defaults to the first stage.")
    expected_close_date: Day | None = None
    owner: str | None = Field(None, max_length=200, description="Defaults to the customer's owner.")
    lost_reason: str | None = Field(None, min_length=1, max_length=500, description="Required when created in the lost stage.")


class DealUpdate(PatchModel):
    """Move a deal with `stage` (a stage name) or `status` (`won`/`lost` go to the pipeline's
    won/lost stage; `open` needs a `stage`). Moving to lost needs a `lost_reason`. Every move
    is appended to the deal's history and announced as `deal.stage_changed`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"stage": "Proposal", "amount": "14000.00"}, {"status": "lost", "lost_reason": "Chose a competitor"}],
            "dependentRequired": {"pipeline_id": ["stage"]},
        }
    )

    title: str | None = Field(None, min_length=1, max_length=200)
    amount: Money | None = None
    currency: Currency | None = None
    pipeline_id: uuid.UUID | None = Field(None, description="Move to another pipeline (needs `stage`).")
    stage: str | None = Field(None, min_length=1, max_length=100)
    status: DealStatus | None = None
    lost_reason: str | None = Field(None, min_length=1, max_length=500)
    expected_close_date: Day | None = None
    owner: str | None = Field(None, max_length=200)

    not_null = ("title", "currency", "pipeline_id", "stage", "status")

    @model_validator(mode="after")
    def _valid(self) -> DealUpdate:
        if self.pipeline_id is not None and self.stage is None:
            raise ValueError("moving to another pipeline needs the stage to go to")
        return self


class DealRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    customer_id: uuid.UUID
    title: str
    amount: DecimalText | None
    currency: str
    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    stage: str
    probability: DecimalText = Field(description="The stage's win probability.")
    status: str
    lost_reason: str | None
    expected_close_date: dt.date | None
    closed_at: dt.datetime | None
    owner: str | None
    stage_entered_at: dt.datetime
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, deal: Any, stage: Any) -> DealRead:
        return cls(
            id=deal.id,
            customer_id=deal.customer_id,
            title=deal.title,
            amount=deal.amount,
            currency=deal.currency,
            pipeline_id=deal.pipeline_id,
            stage_id=deal.stage_id,
            stage=stage.name,
            probability=stage.probability,
            status=deal.status,
            lost_reason=deal.lost_reason,
            expected_close_date=deal.expected_close_date,
            closed_at=deal.closed_at,
            owner=deal.owner,
            stage_entered_at=deal.stage_entered_at,
            version=deal.version,
            created_at=deal.created_at,
            updated_at=deal.updated_at,
        )


class DealPage(Page[DealRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})


class DealStageChangeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [HISTORY_EXAMPLE]})

    id: uuid.UUID
    deal_id: uuid.UUID
    seq: int = Field(description="1 for the creation, then 2, 3... in the order of the moves.")
    pipeline_id: uuid.UUID
    from_stage: str | None
    to_stage: str
    to_status: str
    amount: DecimalText | None = Field(description="The deal's amount at the time of the move.")
    changed_by: str | None
    changed_at: dt.datetime


class DealHistoryPage(Page[DealStageChangeRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [HISTORY_EXAMPLE], "next_cursor": None}]})
