"""The experience view's shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from cem.feedback.schemas import EXAMPLE_READ as FEEDBACK_EXAMPLE
from cem.feedback.schemas import FeedbackRead
from cem.followups.schemas import FollowupRead
from cem.invitations.schemas import EXAMPLE_READ as INVITATION_EXAMPLE
from cem.invitations.schemas import InvitationRead
from cem.responses.schemas import EXAMPLE_READ as RESPONSE_EXAMPLE
from cem.responses.schemas import ResponseRead
from cem.suppressions.schemas import EXAMPLE_READ as SUPPRESSION_EXAMPLE
from cem.suppressions.schemas import SuppressionRead


class ConvertedLead(BaseModel):
    lead_id: uuid.UUID = Field(description="The CRM lead this customer was converted from.")
    deal_id: uuid.UUID | None = Field(description="The deal made with the conversion, if any.")
    converted_at: dt.datetime


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
    open_deal_value: Decimal = Field(description="The sum of the customer's open deals, as the CRM last announced it.")
    converted_from: ConvertedLead | None = Field(description="The lead the customer was converted from (`lead.converted`).")
    erased_at: dt.datetime | None = Field(
        description="When the customer's personal data was erased (GDPR); their scores still count, anonymously."
    )
    crm_version: int = Field(description="The CRM record version this copy reflects.")
    synced_at: dt.datetime = Field(description="When this copy was last updated from an event.")


class LatestScore(BaseModel):
    score: int
    scale_min: int
    scale_max: int
    category: str | None
    survey_id: uuid.UUID
    touchpoint: str | None
    submitted_at: dt.datetime


class ExperienceSummary(BaseModel):
    responses: int = Field(description="Survey responses in all.")
    latest_nps: LatestScore | None = Field(description="The customer's latest NPS answer and its category.")
    nps_average: float | None = Field(description="Average of their NPS answers (0-10).")
    csat_average: float | None = Field(description="Average of their CSAT answers (1-5).")
    ces_average: float | None = Field(description="Average of their CES answers (1-7, 7 = very easy).")
    feedback: int = Field(description="Pieces of feedback in all.")
    open_followups: int = Field(description="Follow-ups asked of the CRM and not done yet.")
    suppressions: int = Field(description="Invitations suppressed by the survey rules (throttle, fatigue, opt-out).")


class TouchpointVisit(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    interaction_id: uuid.UUID
    touchpoint: str | None
    type: str
    channel: str | None
    occurred_at: dt.datetime
    summary: str | None = Field(description="As the reporting system described it (gone once the customer was erased).")
    amount: Decimal | None
    currency: str | None


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
                        "converted_from": {
                            "lead_id": "8d7c6b5a-4f3e-4d2c-9b1a-0f9e8d7c6b5a",
                            "deal_id": None,
                            "converted_at": "2026-11-01T09:00:00Z",
                        },
                        "erased_at": None,
                        "crm_version": 3,
                        "synced_at": "2026-11-23T10:00:01Z",
                    },
                    "summary": {
                        "responses": 1,
                        "latest_nps": {
                            "score": 9,
                            "scale_min": 0,
                            "scale_max": 10,
                            "category": "promoter",
                            "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
                            "touchpoint": "checkout",
                            "submitted_at": "2026-11-23T10:12:00Z",
                        },
                        "nps_average": 9.0,
                        "csat_average": None,
                        "ces_average": None,
                        "feedback": 1,
                        "open_followups": 0,
                        "suppressions": 1,
                    },
                    "invitations": [{**INVITATION_EXAMPLE, "status": "answered", "answered_at": "2026-11-23T10:12:00Z"}],
                    "responses": [RESPONSE_EXAMPLE],
                    "feedback": [FEEDBACK_EXAMPLE],
                    "followups": [],
                    "suppressions": [SUPPRESSION_EXAMPLE],
                    "touchpoint_history": [
                        {
                            "interaction_id": "6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c",
                            "touchpoint": "checkout",
                            "type": "purchase",
                            "channel": "web",
                            "occurred_at": "2026-11-23T09:58:00Z",
                            "summary": "Order 10023",
                            "amount": "49.90",
                            "currency": "EUR",
                        }
                    ],
                }
            ]
        }
    )

    customer: CustomerAsAnnounced
    summary: ExperienceSummary
    invitations: list[InvitationRead] = Field(description="Latest invitations, newest first.")
    responses: list[ResponseRead] = Field(description="Latest answers, newest first.")
    feedback: list[FeedbackRead] = Field(description="Latest feedback, newest first.")
    followups: list[FollowupRead] = Field(description="Latest follow-ups, newest first.")
    suppressions: list[SuppressionRead] = Field(description="Latest suppressed invitations with their reasons, newest first.")
    touchpoint_history: list[TouchpointVisit] = Field(description="Latest interactions at touchpoints, newest first.")
