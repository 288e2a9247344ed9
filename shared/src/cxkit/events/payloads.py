"""Typed `data` of every event type. Within a version only additive changes are allowed;
consumers ignore fields they do not know; a breaking change is a new `.v2` type."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, WithJsonSchema, model_validator
from pydantic_core import InitErrorDetails

from cxkit.fields import MAX_JSON_BYTES, TIME_RANGE, EventTimeAsSent, TimestampAsSent


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


# What the consumers' columns hold: a number beyond it is refused as the event is decoded (to the
# DLQ, with the field and the bound), and the published schema states the bound. Before, such an
# event failed its database statement, was tried again alone a few times and went to the DLQ as
# "handler failed" with the database's error.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
"""A whole number a PostgreSQL `integer` holds (a version, a scale's end, a count)."""


def _money(digits: int, description: str) -> Any:
    """A decimal a `numeric(digits + 2, 2)` column holds: it rounds to cents (half away from
    zero) and then holds less than 10^digits either way, so a value under 10^digits - 0.005
    always fits. Checked by pydantic's own bounds (no Python call per event on the consumers' hot
    path); the schema states the bound, a JSON number or its decimal text."""
    limit = 10**digits
    bound = Decimal(limit) - Decimal("0.005")
    # The schema's writer takes no integer past 64 bits: a larger bound is written as a float (1e36).
    written = limit if limit < 2**63 else float(limit)
    return Annotated[
        Decimal,
        Field(gt=-bound, lt=bound),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": -written, "exclusiveMaximum": written},
                    {"type": "string", "pattern": rf"^-?[0-9]{{1,{digits}}}(\.[0-9]+)?$"},
                ],
                "description": description,
            }
        ),
    ]


AMOUNT_LIMIT = 10**16
Amount = _money(16, "Less than 10^16 either way once rounded to cents (stored so); a JSON number or its decimal text.")
"""An amount of money (`numeric(18, 2)`): a JSON number or its decimal text, such as "129.90"."""
# A sum of amounts (a customer's open deals) is not one amount: each is under 10^16, their sum is
# not. A PostgreSQL table holds fewer than 10^13 rows (2^32 pages of at most 1,169 tuples, even of
# 32 kB), so a sum over one is under 10^29; a consumer keeps it in a `numeric(38, 2)`, whose bound
# this is.
AmountSum = _money(
    36,
    "A sum of amounts: less than 10^36 either way once rounded to cents (stored as `numeric(38, 2)`); a JSON number "
    "or its decimal text.",
)
"""A sum of amounts of money (`numeric(38, 2)`), such as a customer's open deal value."""


# --- crm.customers.v1 -------------------------------------------------------------------


class CustomerSnapshot(Payload):
    """The customer as the CRM holds it after the change (personal fields null once erased)."""

    id: uuid.UUID
    # The lengths are the CRM's own (what it stores and announces), so a projection holds any.
    email: str | None = Field(None, max_length=320)
    name: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=50)
    company: str | None = Field(None, max_length=200)
    lifecycle_stage: str = Field("lead", max_length=20)
    owner: str | None = Field(None, max_length=200)
    tags: list[str] = Field(default_factory=list)
    source: str | None = Field(None, max_length=100)
    survey_opt_out: bool = False
    open_deal_value: AmountSum = Decimal("0")
    version: Int32 = 1
    created_at: TimestampAsSent | None = None
    updated_at: TimestampAsSent | None = None
    external_id: str | None = Field(None, max_length=200, description="The customer's id in another system, if one was given.")


class CustomerCreated(CustomerSnapshot):
    pass


class CustomerUpdated(CustomerSnapshot):
    changed: list[str] = Field(default_factory=list, description="Names of the fields that changed.")


class CustomerMerged(Payload):
    survivor_id: uuid.UUID
    duplicate_id: uuid.UUID
    survivor: CustomerSnapshot


class CustomerErased(Payload):
    customer_id: uuid.UUID
    erased_at: TimestampAsSent


class LeadConverted(Payload):
    lead_id: uuid.UUID
    customer_id: uuid.UUID
    deal_id: uuid.UUID | None = None
    campaign_id: uuid.UUID | None = None


class DealStageChanged(Payload):
    deal_id: uuid.UUID
    customer_id: uuid.UUID
    pipeline_id: uuid.UUID
    title: str | None = None
    from_stage: str | None = None
    to_stage: str
    status: Literal["open", "won", "lost"]
    amount: Amount | None = None
    currency: str | None = None
    changed_by: str | None = None
    changed_at: TimestampAsSent
    customer_open_deal_value: AmountSum = Decimal("0")


class TaskCompleted(Payload):
    task_id: uuid.UUID
    customer_id: uuid.UUID
    origin: str | None = None
    origin_ref: str | None = Field(None, description="For follow-ups: the followup id from CEM.")
    completed_at: TimestampAsSent
    completed_by: str | None = None


class TaskOverdue(Payload):
    """An open task's due time has passed: announced once per due time (a later due time, or
    the task reopened, may be announced again), for whoever reminds its owner."""

    task_id: uuid.UUID
    customer_id: uuid.UUID
    deal_id: uuid.UUID | None = None
    title: str
    owner: str | None = None
    escalated_to: str | None = Field(None, description="The second owner of an escalated follow-up.")
    priority: str
    due_at: TimestampAsSent
    origin: str | None = None
    origin_ref: str | None = None


# --- cx.interactions.v1 -----------------------------------------------------------------


class InteractionRecorded(Payload):
    """Any system may publish this. Either `customer_id` or `customer_email` is required."""

    # The rule of `_needs_customer`, written into the published schema.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["customer_id"], "properties": {"customer_id": {"type": "string"}}},
                {"required": ["customer_email"], "properties": {"customer_email": {"type": "string", "minLength": 1}}},
            ]
        }
    )

    interaction_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    customer_email: str | None = Field(
        None,
        max_length=320,
        description="Without `customer_id`: the customer's email address (spaces around it ignored); "
        "an event whose address is not one goes to the DLQ. The customer is the one with this address once "
        "normalized (the domain in Unicode, NFC, case ignored), as the CRM stores addresses: the CRM makes a lead "
        "with it if there is none. Ignored when `customer_id` is given.",
    )
    type: str = Field(min_length=1, max_length=100)
    channel: str | None = Field(None, max_length=100)
    touchpoint: str | None = Field(None, max_length=100)
    occurred_at: EventTimeAsSent = Field(
        description=f"The instant must be {TIME_RANGE} (the pattern refuses the years from 9000; an offset that "
        "moves the instant out of the range is refused too).",
        json_schema_extra={"pattern": "^[0-8]"},
    )
    summary: str | None = Field(None, max_length=10_000)
    amount: Amount | None = None
    currency: str | None = Field(None, min_length=3, max_length=3)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description=f"Free JSON, at most {MAX_JSON_BYTES} bytes once written as JSON (compact)."
    )

    # `customer_email` as the email library normalizes it, set as the event is decoded (see below).
    _customer_address: str | None = PrivateAttr(None)

    @property
    def customer_address(self) -> str | None:
        """Without `customer_id`: the address that finds the customer, `customer_email` as the
        email library normalizes it (its domain in Unicode, NFC), as the CRM stores an address;
        lower-cased, it is the key both services find a customer by. None with `customer_id`."""
        return self._customer_address

    @model_validator(mode="after")
    def _needs_customer(self) -> InteractionRecorded:
        if self.customer_id is None:
            if not self.customer_email:
                raise ValueError("customer_id or customer_email is required")
            # Both services find (or, the CRM, create) the customer by this address: judged here,
            # as the event is decoded, so neither applies what the other refuses, and normalized
            # once for both. Only for these events: no Python call is added to the others (one
            # with an id is the common case).
            self._customer_address = _an_address(self.customer_email)
        return self


def _an_address(value: str) -> str:
    """`value` (spaces around it ignored) normalized as an email address by the email library
    (without looking up the domain); else a ValidationError at `customer_email`."""
    if not value.strip():
        reason = "blank: an email address is required without customer_id"
    else:
        try:
            return validate_email(value.strip(), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            reason = f"not an email address: {exc}"
    error = InitErrorDetails(type="value_error", loc=("customer_email",), input=value, ctx={"error": ValueError(reason)})
    raise ValidationError.from_exception_data(InteractionRecorded.__name__, [error])


# --- cem.feedback.v1 ---------------------------------------------------------------------


# The text lengths of this topic's payloads are the CRM's experience projection's columns (what it
# stores of each event); the CEM's own columns are no longer.


class SurveyInvited(Payload):
    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    survey_name: str | None = Field(None, max_length=200)
    survey_kind: str | None = Field(None, max_length=20)
    customer_id: uuid.UUID | None = Field(
        None, description="The invited customer; null for an invitation to a bare email address (see `email`)."
    )
    touchpoint: str | None = Field(None, max_length=100)
    url: str | None = None
    unsubscribe_url: str | None = Field(
        None,
        description="Where the recipient asks for no more surveys: a page to open, and the RFC 8058 one-click target "
        "(`List-Unsubscribe: <unsubscribe_url>` with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`) for the "
        "mail that carries `url`.",
    )
    expires_at: TimestampAsSent | None = None
    email: str | None = Field(None, description="The address the link is for, when known.")
    channel: str | None = Field(None, max_length=100, description="How the link is delivered, e.g. email, sms.")
    language: str | None = Field(
        None,
        description="The survey's language (`en`, `de`, `fr`, `es`, `it`, `nl`, `pt`): the respondent page speaks it; "
        "write the message that carries the link in it too.",
    )


class SurveyThrottled(Payload):
    """An invitation that was not made, and why (opted_out, erased, survey_throttle, fatigue)."""

    survey_id: uuid.UUID
    customer_id: uuid.UUID | None = Field(
        None, description="The customer; null for a suppression of a bare email address (see `email`)."
    )
    email: str | None = Field(None, description="The address, for a suppression of a bare email address.")
    reason: str = Field(max_length=500)
    touchpoint: str | None = Field(None, max_length=100)
    interaction_id: uuid.UUID | None = None


class SurveyResponseSubmitted(Payload):
    """An answer to a survey; one given under an address nobody was known by is announced again with its customer.

    When the CRM announces a customer with that address, the CEM links the answer to it and
    announces it again, keyed by the customer, with the same `response_id`."""

    response_id: uuid.UUID
    survey_id: uuid.UUID
    survey_kind: str = Field(max_length=20)
    invitation_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = Field(
        None, description="The customer; null for an answer given under an address no customer was known by yet."
    )
    touchpoint: str | None = Field(None, max_length=100)
    score: float | None = None
    scale_min: Int32 | None = None
    scale_max: Int32 | None = None
    category: str | None = Field(
        None, max_length=20, description="nps: promoter/passive/detractor; csat/ces: positive/neutral/negative"
    )
    comment: str | None = None
    submitted_at: TimestampAsSent
    metric: str | None = Field(
        None, max_length=20, description="What `score` measures: nps, csat or ces (a custom survey may carry one)."
    )


class FeedbackReceived(Payload):
    """Feedback with its sentiment; feedback given under an address nobody was known by is announced again with its customer.

    When the CRM announces a customer with that address, the CEM links the feedback to it and
    announces it again, keyed by the customer, with the same `feedback_id`."""

    feedback_id: uuid.UUID
    customer_id: uuid.UUID | None = Field(
        None, description="The customer; null for feedback given under an address no customer was known by yet."
    )
    touchpoint: str | None = Field(None, max_length=100)
    channel: str | None = Field(None, max_length=100)
    text: str | None = None
    rating: float | None = None
    sentiment_label: str | None = Field(None, max_length=20)
    sentiment_score: float | None = None
    received_at: TimestampAsSent
    rating_scale_min: Int32 | None = Field(None, description="Lowest value of the rating's scale.")
    rating_scale_max: Int32 | None = Field(None, description="Highest value of the rating's scale.")


class FollowupRequested(Payload):
    followup_id: uuid.UUID
    customer_id: uuid.UUID
    response_id: uuid.UUID
    survey_id: uuid.UUID
    survey_kind: str = Field(max_length=20)
    score: float | None = None
    reason: str = Field(max_length=500)
    touchpoint: str | None = Field(None, max_length=100)
    comment: str | None = None
    metric: str | None = Field(None, max_length=20, description="What `score` measures: nps, csat or ces.")
    due_at: TimestampAsSent | None = Field(
        None, description="When the follow-up must be closed by (its SLA, per survey kind and score band)."
    )


class _SentInvitation(Payload):
    """What every event about a sent invitation (reminded, withdrawn) says of it first."""

    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    survey_name: str | None = Field(None, max_length=200)
    survey_kind: str | None = Field(None, max_length=20)
    customer_id: uuid.UUID | None = Field(
        None, description="The invited customer; null for an invitation to a bare email address (see `email`)."
    )
    email: str | None = Field(None, description="The address the invitation went to, when known.")
    touchpoint: str | None = Field(None, max_length=100)
    channel: str | None = Field(None, max_length=100)


class SurveyReminded(_SentInvitation):
    """A reminder of an invitation not answered yet, with a link of its own (`url`) to it."""

    reminder: Int32 = Field(description="Which reminder this is: 1 for the first.")
    max_reminders: Int32 = Field(description="How many reminders the survey sends at most.")
    expires_at: TimestampAsSent | None = Field(None, description="When the invitation's links stop working.")
    url: str | None = Field(
        None,
        description=(
            "A new link to the invitation, handed out with this reminder (each reminder has its own; the link of "
            "`survey.invited` and those of earlier reminders keep working). Any of them answers the invitation, "
            "once, until `expires_at`."
        ),
    )
    unsubscribe_url: str | None = Field(
        None, description="Where the recipient asks for no more surveys, as in `survey.invited` (through this link)."
    )
    language: str | None = Field(
        None,
        description="The survey's language (`en`, `de`, `fr`, `es`, `it`, `nl`, `pt`): the respondent page speaks it; "
        "write the message that carries the link in it too.",
    )


class SurveyInvitationCancelled(_SentInvitation):
    """A sent invitation withdrawn before it was answered: none of its links (its own and its
    reminders') take an answer any more, and it is reminded no more."""

    reason: str = Field(
        max_length=500,
        description="Why it was withdrawn: by_request (`POST /v1/invitations/{id}/cancel`) or opted_out (the recipient "
        "asked for no more surveys, `survey.opted_out`).",
    )
    sent_at: TimestampAsSent = Field(description="When the invitation was sent (announced by `survey.invited`).")
    cancelled_at: TimestampAsSent


class SurveyOptedOut(_SentInvitation):
    """The recipient asked, from an invitation's link (`/r/{token}/unsubscribe`), to be sent no
    more surveys. The CEM invites neither the customer nor the address again, and withdraws
    their open invitations (each announced as `survey.invitation_cancelled`, reason
    `opted_out`). The CRM marks the customer `survey_opt_out`; whatever sends survey mail
    should stop mailing `email`. Announced once per recipient: a second request adds nothing."""

    opted_out_at: TimestampAsSent = Field(
        description="When the recipient asked. The CRM orders a customer's wishes by it: one asked before the flag's "
        "last setting (a later opt-in, or a change by a user) changes nothing, however late it arrives."
    )
    cancelled_invitations: Int32 = Field(description="How many of the recipient's open invitations this withdrew.")


class SurveyOptedIn(_SentInvitation):
    """The recipient who had opted out asked, from an invitation's link, for surveys again
    (`/r/{token}/resubscribe`): the CEM may invite the customer and the address again (the
    invitations withdrawn when they opted out stay withdrawn), and the CRM clears the customer's
    `survey_opt_out`. Announced only when they had opted out."""

    opted_in_at: TimestampAsSent = Field(
        description="When the recipient asked. The CRM orders a customer's wishes by it: one asked before the flag's "
        "last setting (a later opt-out, or a change by a user) changes nothing, however late it arrives."
    )


class FollowupOverdue(Payload):
    """A follow-up still open past its due time (announced once per follow-up)."""

    followup_id: uuid.UUID
    customer_id: uuid.UUID
    survey_id: uuid.UUID
    metric: str | None = Field(None, description="What `score` measures: nps, csat or ces.")
    score: float | None = None
    requested_at: TimestampAsSent = Field(description="When the follow-up was raised.")
    due_at: TimestampAsSent = Field(description="When it was due.")
