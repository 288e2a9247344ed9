"""Invitation input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from cem.fields import Channel, Slug
from cxkit.fields import InputModel, JsonInteger, exactly_one_of
from cxkit.http.batch import BATCH_MAX, BatchBody, BatchItemProblem, each_item

InvitationStatus = Literal["scheduled", "sent", "opened", "answered", "expired", "cancelled"]


class InvitationCreate(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10", "channel": "email"},
                {"email": "guest@example.com", "touchpoint": "checkout", "expires_in_days": 7},
            ],
            **exactly_one_of("customer_id", "email"),
        },
    )

    customer_id: uuid.UUID | None = Field(None, description="A customer the CRM announced. Give this or `email`.")
    email: EmailStr | None = Field(
        None, description="Invite by email: linked to the customer with that email if known, otherwise to the bare address."
    )
    touchpoint: Slug | None = Field(None, description="The touchpoint (key) the answer is about; default: the survey's.")
    channel: Channel | None = Field(None, description="How the link reaches the customer: email, sms, qr...")
    expires_in_days: Annotated[int, Field(ge=1, le=365), JsonInteger] | None = Field(
        None,
        description="Days the link stays valid; default: the service's `CEM_INVITATION_TTL_DAYS`.",
    )

    @model_validator(mode="after")
    def _one_recipient(self) -> InvitationCreate:
        if (self.customer_id is None) == (self.email is None):
            raise ValueError("give either customer_id or email")
        return self


EXAMPLE_READ = {
    "id": "7c9e1a3b-5d7f-4b2a-8c4e-6f8a0b2c4d6e",
    "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "email": None,
    "touchpoint": "checkout",
    "channel": "email",
    "origin": "api",
    "interaction_id": None,
    "status": "sent",
    "created_at": "2026-11-23T10:00:00Z",
    "send_at": "2026-11-23T10:00:00Z",
    "sent_at": "2026-11-23T10:00:00Z",
    "expires_at": "2026-12-23T10:00:00Z",
    "opened_at": None,
    "answered_at": None,
    "cancelled_at": None,
    "cancel_reason": None,
    "reminders_sent": 1,
    "last_reminded_at": "2026-11-26T10:00:00Z",
}


class InvitationRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_READ]})

    id: uuid.UUID
    survey_id: uuid.UUID
    customer_id: uuid.UUID | None
    email: str | None
    touchpoint: str | None
    channel: str | None
    origin: str = Field(
        description="api (made by a client), trigger (an interaction matched the survey's trigger), recurrence "
        "(the survey's interval came round) or followup (asked again after a follow-up closed: `resurvey_after_days`)."
    )
    interaction_id: uuid.UUID | None = Field(description="The interaction that triggered it, if any.")
    status: InvitationStatus = Field(
        description="scheduled (waits for `send_at`; no link yet), sent (not opened yet), opened (the page was viewed), "
        "answered, expired (not answered in time), or cancelled (withdrawn: by request; when the recipient "
        "unsubscribed through a link, which withdraws each of their invitations not yet answered or expired, sent "
        "and opened ones too; or, before it went out, because the customer was erased, had opted out by the time "
        "it was due, or its survey had closed)."
    )
    created_at: dt.datetime
    send_at: dt.datetime = Field(
        description="When it went out, or is due to (a trigger's `delay_minutes` after the interaction). One held "
        "while its survey was back in draft goes out once the survey is active again, and this is then that moment."
    )
    sent_at: dt.datetime | None = Field(description="When it went out; null while scheduled.")
    expires_at: dt.datetime
    opened_at: dt.datetime | None
    answered_at: dt.datetime | None
    cancelled_at: dt.datetime | None = Field(description="When it was cancelled; null unless `status` is cancelled.")
    cancel_reason: str | None = Field(
        description="Why it was cancelled: by_request (`POST /v1/invitations/{id}/cancel`); opted_out (the recipient "
        "unsubscribed through a link, `POST /r/{token}/unsubscribe`, which withdraws every invitation to them not yet "
        "answered or expired, sent ones too; or a scheduled one came due after the customer opted out); erased (a "
        "scheduled one, when the customer was erased before it went out); survey_closed (a scheduled one came due "
        "after its survey was closed, by hand or by `max_responses`, or passed `closes_at`); or survey_draft (its "
        "survey was back in draft from when it came due until past its `expires_at`)."
    )
    reminders_sent: int = Field(description="Reminders sent (`survey.reminded`), by the survey's `reminders`.")
    last_reminded_at: dt.datetime | None = Field(description="When the last reminder went out.")


_CREATED_EXAMPLE = {
    **EXAMPLE_READ,
    "reminders_sent": 0,
    "last_reminded_at": None,
    "token": "q8Yb3k0n2ZfJx4mQp7Rv1sTu9wXy5AaBcDeFgHiJkLm",
    "url": "https://cx.example.com/r/q8Yb3k0n2ZfJx4mQp7Rv1sTu9wXy5AaBcDeFgHiJkLm",
    "unsubscribe_url": "https://cx.example.com/r/q8Yb3k0n2ZfJx4mQp7Rv1sTu9wXy5AaBcDeFgHiJkLm/unsubscribe",
}


class InvitationCreated(InvitationRead):
    """The new invitation with its link. The token is shown this once: only its hash is stored."""

    model_config = ConfigDict(json_schema_extra={"examples": [_CREATED_EXAMPLE]})

    token: str = Field(description="256 random bits, URL-safe. Shown once.")
    url: str = Field(description="The respondent page for this invitation.")
    unsubscribe_url: str = Field(
        description="Where the recipient asks for no more surveys: link it in the message, and give it as the RFC 8058 "
        "one-click `List-Unsubscribe` target (`POST` with any body)."
    )


# Each item is validated on its own: a bad one gets a problem in its result, the others go on.
BatchInvitation = each_item(InvitationCreate)


class InvitationBatch(BatchBody):
    """Many invitations to one survey: each item as the body of `POST /v1/surveys/{id}/invitations`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10", "channel": "email"},
                        {"email": "guest@example.com", "channel": "email", "expires_in_days": 14},
                    ]
                }
            ]
        }
    )

    items: list[BatchInvitation] = Field(min_length=1, max_length=BATCH_MAX)


class InvitationBatchItemResult(BaseModel):
    index: int = Field(description="The item's position in `items`, from 0.")
    status: Literal["created", "error"]
    invitation: InvitationCreated | None = Field(None, description="The new invitation with its link (not for an error).")
    problem: BatchItemProblem | None = Field(None, description="For `error`: why this item was not invited.")


class InvitationBatchResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {"index": 0, "status": "created", "invitation": _CREATED_EXAMPLE, "problem": None},
                        {
                            "index": 1,
                            "status": "error",
                            "invitation": None,
                            "problem": {
                                "type": "https://cx.example.org/problems/conflict",
                                "status": 409,
                                "title": "Conflict",
                                "detail": "customer 5a1c7e9b-3d2f-4b6a-8e0c-1f3a5b7d9e2c opted out of surveys; they are never "
                                "invited",
                                "errors": [],
                            },
                        },
                    ],
                    "counts": {"created": 1, "error": 1},
                }
            ]
        }
    )

    results: list[InvitationBatchItemResult] = Field(description="One per item, in the order of `items`.")
    counts: dict[str, int] = Field(description="How many items were `created` and how many were an `error`.")
