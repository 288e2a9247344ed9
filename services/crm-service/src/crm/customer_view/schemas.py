"""The joined customer view and the customer timeline."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm.customers.models import ChangeVia
from crm.customers.schemas import HISTORY_EXAMPLE, CustomerRead, FieldChange
from crm.customers.schemas import READ_EXAMPLE as CUSTOMER_EXAMPLE
from crm.deals.schemas import READ_EXAMPLE as DEAL_EXAMPLE
from crm.deals.schemas import DealRead
from crm.fields import EXAMPLE_IDS, DecimalText
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
    purchase_total: DecimalText | None = Field(description="Sum of purchase amounts (as stored).")
    average_order_value: DecimalText | None = Field(description="Mean amount of the purchases that carry one.")
    purchase_frequency_per_30d: float | None = Field(
        description="Purchases per 30 days over the customer's purchase history: purchases / max(days since the first "
        "purchase, 30) x 30, so a new buyer is measured over at least one 30-day window. Null before a purchase."
    )


SURVEY_EXAMPLE_ID = "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"
EXPERIENCE_EXAMPLE = {
    "latest_nps": {
        "score": 3,
        "category": "detractor",
        "scale_min": 0,
        "scale_max": 10,
        "answered_at": "2026-11-22T17:02:00Z",
        "survey_id": SURVEY_EXAMPLE_ID,
        "touchpoint": "checkout",
        "comment": "Delivery was two days late.",
    },
    "csat": {"average": 3.5, "satisfied_percent": 50.0, "answers": 2},
    "ces": None,
    "responses": 4,
    "last_response_at": "2026-11-22T17:02:00Z",
    "last_feedback": {
        "text": "The courier left the parcel in the rain.",
        "sentiment_label": "negative",
        "sentiment_score": -0.6,
        "rating": None,
        "touchpoint": "delivery",
        "channel": "email",
        "received_at": "2026-11-21T08:15:00Z",
    },
    "feedback": 1,
    "open_followups": 1,
    "invitations": {
        "sent": 3,
        "last_sent_at": "2026-11-22T16:40:00Z",
        "suppressed": 1,
        "last_suppressed_at": "2026-11-22T18:00:00Z",
        "last_suppression_reason": "survey_throttle",
        "reminders": 1,
        "last_reminded_at": "2026-11-20T09:00:00Z",
        "cancelled": 0,
        "last_cancelled_at": None,
    },
    "updated_at": "2026-11-22T18:00:00Z",
}


class NpsAnswer(BaseModel):
    score: float = Field(description="0-10.")
    category: str | None = Field(description="promoter (9-10), passive (7-8) or detractor (0-6).")
    scale_min: int | None
    scale_max: int | None
    answered_at: dt.datetime
    survey_id: uuid.UUID | None
    touchpoint: str | None
    comment: str | None = Field(description="What the customer wrote with the score (null once erased).")


class CsatSummary(BaseModel):
    average: float = Field(description="Mean CSAT score (1-5).")
    satisfied_percent: float = Field(description="Share of answers of 4 or 5, in percent: the CSAT score.")
    answers: int = Field(description="Scored CSAT answers (skipped ones are left out).")


class CesSummary(BaseModel):
    average: float = Field(description="Mean customer effort score (1-7).")
    answers: int = Field(description="Scored CES answers (skipped ones are left out).")


class FeedbackSummary(BaseModel):
    text: str | None = Field(description="The feedback text (null once erased).")
    sentiment_label: str | None = Field(description="positive, neutral or negative, worked out by the CEM service.")
    sentiment_score: float | None = Field(description="-1 (most negative) to 1 (most positive).")
    rating: float | None
    touchpoint: str | None
    channel: str | None
    received_at: dt.datetime


class InvitationSummary(BaseModel):
    sent: int = Field(description="Survey invitations made for the customer.")
    last_sent_at: dt.datetime | None
    suppressed: int = Field(description="Invitations not made (throttle, fatigue rule, opt-out...), each with a reason.")
    last_suppressed_at: dt.datetime | None
    last_suppression_reason: str | None
    reminders: int = Field(description="Reminders sent of the customer's unanswered invitations (`survey.reminded`).")
    last_reminded_at: dt.datetime | None
    cancelled: int = Field(description="Sent invitations withdrawn before they were answered (`survey.invitation_cancelled`).")
    last_cancelled_at: dt.datetime | None


class ExperienceSummary(BaseModel):
    """What the CEM service reported about this customer's experience (from `cem.feedback.v1`,
    kept locally, so it is shown even while the CEM service is down)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXPERIENCE_EXAMPLE]})

    latest_nps: NpsAnswer | None = Field(description="The latest scored NPS answer.")
    csat: CsatSummary | None = Field(description="All the customer's scored CSAT answers; null without any.")
    ces: CesSummary | None = Field(description="All the customer's scored CES answers; null without any.")
    responses: int = Field(description="Survey responses of any kind (skipped scores included).")
    last_response_at: dt.datetime | None
    last_feedback: FeedbackSummary | None = Field(description="The latest free feedback from any channel.")
    feedback: int = Field(description="Feedback items received.")
    open_followups: int = Field(description="Follow-up tasks (origin `followup`) not yet completed or cancelled.")
    invitations: InvitationSummary
    updated_at: dt.datetime = Field(description="When the latest of these events happened.")


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
                    "experience": EXPERIENCE_EXAMPLE,
                }
            ]
        }
    )

    customer: CustomerRead
    open_deals: list[DealRead] = Field(description="Open deals, soonest expected close first (at most 50).")
    open_deal_value: DecimalText = Field(description="Sum of the open deals' amounts.")
    interaction_stats: InteractionStats
    open_tasks: list[TaskRead] = Field(description="Open tasks, soonest due first (at most 20).")
    experience: ExperienceSummary | None = Field(
        None,
        description="The customer's experience as the CEM service reports it (kept locally); null while the CEM "
        "service has reported nothing about this customer.",
    )


# --- timeline ----------------------------------------------------------------------------


class _Entry(BaseModel):
    at: dt.datetime = Field(description="When it happened.")
    id: uuid.UUID = Field(
        description="The id of the interaction, stage change, field change (as the customer's history has it), task or "
        "document; for the CEM's events, the CRM's id of "
        "the event (the CEM's own ids are in the entry's other fields)."
    )


class InteractionEntry(_Entry):
    kind: Literal["interaction"] = "interaction"
    type: str
    channel: str | None
    touchpoint: str | None
    summary: str | None
    amount: DecimalText | None
    currency: str | None


class DealStageEntry(_Entry):
    kind: Literal["deal_stage_changed"] = "deal_stage_changed"
    deal_id: uuid.UUID
    deal_title: str
    from_stage: str | None
    to_stage: str
    status: str
    amount: DecimalText | None
    changed_by: str | None


class CustomerChangedEntry(_Entry):
    kind: Literal["customer_changed"] = "customer_changed"
    version: int = Field(description="The customer's version after this change (its ETag then).")
    changed_by: str | None = Field(description="The name of the API key that made the change (null: the service itself).")
    via: ChangeVia | None = Field(
        description="What made it: `update`, `batch`, `merge`, `erasure`, `lead_conversion`, `deal`, `survey_opt_out`, "
        "`survey_opt_in` (as in the customer's history); null for the service's own changes."
    )
    changes: list[FieldChange] = Field(description="Each field that changed, in field-name order.")


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


class _InvitationEntry(_Entry):
    """What every entry about an invitation (sent, reminded, withdrawn, its link used to opt out or
    back in) shows of it."""

    kind: str  # each entry's own literal, in this place
    invitation_id: uuid.UUID | None
    survey_id: uuid.UUID | None
    survey_name: str | None
    survey_kind: str | None
    touchpoint: str | None
    channel: str | None


class SurveyInvitedEntry(_InvitationEntry):
    kind: Literal["survey.invited"] = "survey.invited"
    expires_at: dt.datetime | None


class SurveyRemindedEntry(_InvitationEntry):
    kind: Literal["survey.reminded"] = "survey.reminded"
    reminder: int | None = Field(description="Which reminder of the invitation: 1 for the first.")
    expires_at: dt.datetime | None


class InvitationCancelledEntry(_InvitationEntry):
    kind: Literal["survey.invitation_cancelled"] = "survey.invitation_cancelled"
    reason: str | None = Field(description="Why the sent invitation was withdrawn, e.g. by_request.")


class SurveyOptedOutEntry(_InvitationEntry):
    """The customer asked, from this invitation's link, to be sent no more surveys (the record's
    `survey_opt_out` was set then, a `customer_changed` entry of its own)."""

    kind: Literal["survey.opted_out"] = "survey.opted_out"


class SurveyOptedInEntry(_InvitationEntry):
    """The customer, opted out, asked from this invitation's link for surveys again (the record's
    `survey_opt_out` was cleared then, a `customer_changed` entry of its own)."""

    kind: Literal["survey.opted_in"] = "survey.opted_in"


class SurveyThrottledEntry(_Entry):
    kind: Literal["survey.throttled"] = "survey.throttled"
    survey_id: uuid.UUID | None
    reason: str | None = Field(description="Why no invitation was made, e.g. survey_throttle, fatigue, opted_out.")
    touchpoint: str | None


class SurveyResponseEntry(_Entry):
    kind: Literal["survey.response.submitted"] = "survey.response.submitted"
    response_id: uuid.UUID | None
    survey_id: uuid.UUID | None
    survey_kind: str | None
    metric: str | None
    score: float | None
    scale_min: int | None
    scale_max: int | None
    category: str | None
    comment: str | None
    touchpoint: str | None


class FeedbackEntry(_Entry):
    kind: Literal["feedback.received"] = "feedback.received"
    feedback_id: uuid.UUID | None
    text: str | None
    rating: float | None
    rating_scale_min: int | None
    rating_scale_max: int | None
    sentiment_label: str | None
    sentiment_score: float | None
    touchpoint: str | None
    channel: str | None


class FollowupRequestedEntry(_Entry):
    kind: Literal["followup.requested"] = "followup.requested"
    followup_id: uuid.UUID | None
    survey_id: uuid.UUID | None
    response_id: uuid.UUID | None
    metric: str | None
    score: float | None
    reason: str | None
    comment: str | None
    touchpoint: str | None
    task_id: uuid.UUID | None = Field(description="The task made for it (null for an erased customer).")
    task_status: str | None


TimelineEntry = Annotated[
    InteractionEntry
    | DealStageEntry
    | CustomerChangedEntry
    | TaskCreatedEntry
    | TaskCompletedEntry
    | DocumentEntry
    | SurveyInvitedEntry
    | SurveyRemindedEntry
    | InvitationCancelledEntry
    | SurveyOptedOutEntry
    | SurveyOptedInEntry
    | SurveyThrottledEntry
    | SurveyResponseEntry
    | FeedbackEntry
    | FollowupRequestedEntry,
    Field(discriminator="kind"),
]
TIMELINE_KINDS = (
    "interaction",
    "deal_stage_changed",
    "customer_changed",
    "task_created",
    "task_completed",
    "document_added",
    "survey.invited",
    "survey.reminded",
    "survey.invitation_cancelled",
    "survey.opted_out",
    "survey.opted_in",
    "survey.throttled",
    "survey.response.submitted",
    "feedback.received",
    "followup.requested",
)
TimelineKind = Literal[
    "interaction",
    "deal_stage_changed",
    "customer_changed",
    "task_created",
    "task_completed",
    "document_added",
    "survey.invited",
    "survey.reminded",
    "survey.invitation_cancelled",
    "survey.opted_out",
    "survey.opted_in",
    "survey.throttled",
    "survey.response.submitted",
    "feedback.received",
    "followup.requested",
]


class Timeline(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "kind": "survey.response.submitted",
                            "at": "2026-11-23T12:05:00Z",
                            "id": "c4d5e6f7-a8b9-4c0d-9e1f-2a3b4c5d6e7f",
                            "response_id": "d5e6f7a8-b9c0-4d1e-8f2a-3b4c5d6e7f80",
                            "survey_id": SURVEY_EXAMPLE_ID,
                            "survey_kind": "nps",
                            "metric": "nps",
                            "score": 9,
                            "scale_min": 0,
                            "scale_max": 10,
                            "category": "promoter",
                            "comment": "Quick and friendly.",
                            "touchpoint": "checkout",
                        },
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
                            "kind": "customer_changed",
                            "at": "2026-11-23T10:15:02.114Z",
                            "id": HISTORY_EXAMPLE["id"],
                            "version": HISTORY_EXAMPLE["version"],
                            "changed_by": HISTORY_EXAMPLE["changed_by"],
                            "via": HISTORY_EXAMPLE["via"],
                            "changes": HISTORY_EXAMPLE["changes"],
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
