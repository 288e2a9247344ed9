"""The joined customer view and the customer timeline."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm.customers.schemas import READ_EXAMPLE as CUSTOMER_EXAMPLE
from crm.customers.schemas import CustomerRead
from crm.deals.schemas import READ_EXAMPLE as DEAL_EXAMPLE
from crm.deals.schemas import DealRead
from crm.fields import EXAMPLE_IDS
from crm.tasks.schemas import READ_EXAMPLE as TASK_EXAMPLE
from crm.tasks.schemas import TaskRead

STATS_EXAMPLE = {
    "count": 14,
    "last_interaction_at": "2026-11-22T16:10:00Z",
    "last_contacted_at": "2026-11-20T10:00:00Z",
    "purchases": 5,
    "first_purchase_at": "2026-05-02T12:00:00Z",
    "last_purchase_at": "2026-11-22T16:10:00Z",
    "purchase_total": "649.50",
    "average_order_value": "129.90",
    "purchase_frequency_per_30d": 0.73,
}


class InteractionStats(BaseModel):
    count: int = Field(description="Interactions of any type.")
    last_interaction_at: dt.datetime | None = Field(description="The latest interaction of any type.")
    last_contacted_at: dt.datetime | None = Field(
        description="The latest call, email, meeting, chat, sms, visit or demo: when the company last reached out."
    )
    purchases: int = Field(description="Interactions of type `purchase`.")
    first_purchase_at: dt.datetime | None
    last_purchase_at: dt.datetime | None
    purchase_total: Decimal | None = Field(description="Sum of purchase amounts (as stored).")
    average_order_value: Decimal | None = Field(description="Mean amount of the purchases that carry one.")
    purchase_frequency_per_30d: float | None = Field(
        description="Purchases per 30 days over the customer's purchase history: purchases / max(days since the first "
        "purchase, 30) x 30, so a new buyer is measured over at least one 30-day window. Null before a purchase."
    )


class ExperienceSummary(BaseModel):
    """What the CEM service tells about this customer's experience (from `cem.feedback.v1`)."""

    latest_nps_score: float | None = None
    latest_nps_category: str | None = None
    csat_average: float | None = None
    responses: int = 0
    last_feedback_at: dt.datetime | None = None
    last_feedback: str | None = None
    open_followups: int = 0


class CustomerView(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer": CUSTOMER_EXAMPLE,
                    "open_deals": [DEAL_EXAMPLE],
                    "open_deal_value": "12500.00",
                    "interaction_stats": STATS_EXAMPLE,
                    "open_tasks": [TASK_EXAMPLE],
                    "experience": None,
                }
            ]
        }
    )

    customer: CustomerRead
    open_deals: list[DealRead] = Field(description="Open deals, soonest expected close first (at most 50).")
    open_deal_value: Decimal = Field(description="Sum of the open deals' amounts.")
    interaction_stats: InteractionStats
    open_tasks: list[TaskRead] = Field(description="Open tasks, soonest due first (at most 20).")
    experience: ExperienceSummary | None = Field(
        None, description="The customer's experience as the CEM service reports it; null while nothing has been reported."
    )


# --- timeline ----------------------------------------------------------------------------


class _Entry(BaseModel):
    at: dt.datetime = Field(description="When it happened.")
    id: uuid.UUID = Field(description="The id of the interaction, stage change, task or document.")


class InteractionEntry(_Entry):
    kind: Literal["interaction"] = "interaction"
    type: str
    channel: str | None
    touchpoint: str | None
    summary: str | None
    amount: Decimal | None
    currency: str | None


class DealStageEntry(_Entry):
    kind: Literal["deal_stage_changed"] = "deal_stage_changed"
    deal_id: uuid.UUID
    deal_title: str
    from_stage: str | None
    to_stage: str
    status: str
    amount: Decimal | None
    changed_by: str | None


class TaskCreatedEntry(_Entry):
    kind: Literal["task_created"] = "task_created"
    title: str
    due_at: dt.datetime | None
    owner: str | None
    origin: str


class TaskCompletedEntry(_Entry):
    kind: Literal["task_completed"] = "task_completed"
    title: str
    completed_by: str | None
    origin: str
    origin_ref: str | None


class DocumentEntry(_Entry):
    kind: Literal["document_added"] = "document_added"
    filename: str
    content_type: str
    deal_id: uuid.UUID | None


TimelineEntry = Annotated[
    InteractionEntry | DealStageEntry | TaskCreatedEntry | TaskCompletedEntry | DocumentEntry, Field(discriminator="kind")
]
TIMELINE_KINDS = ("interaction", "deal_stage_changed", "task_created", "task_completed", "document_added")
TimelineKind = Literal["interaction", "deal_stage_changed", "task_created", "task_completed", "document_added"]


class Timeline(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "kind": "deal_stage_changed",
                            "at": "2026-11-23T11:00:00Z",
                            "id": "0e1d2c3b-4a59-4687-9f0e-1d2c3b4a5968",
                            "deal_id": EXAMPLE_IDS["deal"],
                            "deal_title": "Analytical Engine, 3 seats",
                            "from_stage": "Qualification",
                            "to_stage": "Proposal",
                            "status": "open",
                            "amount": "12500.00",
                            "changed_by": "sales-frontend",
                        },
                        {
                            "kind": "interaction",
                            "at": "2026-11-23T09:30:00Z",
                            "id": EXAMPLE_IDS["interaction"],
                            "type": "purchase",
                            "channel": "web",
                            "touchpoint": "checkout",
                            "summary": "Order #10421",
                            "amount": "129.90",
                            "currency": "EUR",
                        },
                    ],
                    "next_cursor": None,
                }
            ]
        }
    )

    items: list[TimelineEntry]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get older entries; null at the beginning.")
