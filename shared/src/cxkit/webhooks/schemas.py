"""Webhook subscription and delivery shapes (requests and answers)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cxkit.fields import InputModel, PatchModel
from cxkit.http.pagination import Page

DeliveryStatus = Literal["pending", "succeeded", "failed"]
EXAMPLE_ID = "0b9d3c2e-7f41-4d8a-9a52-3e1f6c7d8b90"
EXAMPLE_DELIVERY_ID = "5c2a9e61-3b7d-4f08-a1c4-9d8e7f6a5b43"
EXAMPLE_CREATE: dict[str, Any] = {
    "url": "https://hooks.example.com/cx",
    "event_types": ["customer.created", "customer.updated"],
    "description": "Billing system",
}
EXAMPLE_READ: dict[str, Any] = {
    **EXAMPLE_CREATE,
    "id": EXAMPLE_ID,
    "enabled": True,
    "disabled_reason": None,
    "consecutive_failures": 0,
    "version": 1,
    "created_at": "2026-12-02T10:00:00Z",
    "updated_at": "2026-12-02T10:00:00Z",
    "previous_secret_expires_at": None,
}
EXAMPLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EXAMPLE_DELIVERY: dict[str, Any] = {
    "id": EXAMPLE_DELIVERY_ID,
    "subscription_id": EXAMPLE_ID,
    "webhook_id": "3f1c8a52-9d4e-4b7a-8c21-6e5d4f3a2b10",
    "event_type": "customer.updated",
    "ordering_key": "7d2f4c1a-2b3e-4f5a-9c8d-1e2f3a4b5c6d",
    "status": "succeeded",
    "attempts": 2,
    "last_status_code": 200,
    "last_error": None,
    "last_duration_ms": 41,
    "next_attempt_at": None,
    "attempt_log": [
        {"at": "2026-12-02T10:00:01Z", "status_code": 503, "duration_ms": 12, "error": "HTTP 503: unavailable"},
        {"at": "2026-12-02T10:00:06Z", "status_code": 200, "duration_ms": 41, "error": None},
    ],
    "created_at": "2026-12-02T10:00:01Z",
    "delivered_at": "2026-12-02T10:00:06Z",
    "expires_at": "2026-12-03T10:00:01Z",
}


# No control character or white space: `\s` alone differs between Python (adds \x1c-\x1f, \x85)
# and the ECMA regexes JSON Schema validators use (adds \ufeff), so those are named too.
URL_PATTERN = r"^https?://[^\s\x00-\x1f\x7f\x85\ufeff]+$"
URL_MAX_LENGTH = 2000
EVENT_TYPE = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=255)]
URL_FIELD = Field(
    min_length=1,
    max_length=URL_MAX_LENGTH,
    pattern=URL_PATTERN,
    description="Where deliveries are POSTed (http or https). Private, loopback and link-local targets are refused "
    "unless the service allows them (`WEBHOOK_ALLOW_PRIVATE_TARGETS`).",
)
EVENT_TYPES_FIELD = Field(
    default_factory=list,
    max_length=50,
    description="Event types to deliver, e.g. `customer.updated`; empty: every event type this service announces.",
)


class WebhookCreate(InputModel):
    """A receiver for this service's events."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CREATE]})

    url: str = URL_FIELD
    event_types: list[EVENT_TYPE] = EVENT_TYPES_FIELD
    description: str | None = Field(None, max_length=1000)
    enabled: bool = True


class WebhookUpdate(PatchModel):
    """Only the fields sent change. Enabling a disabled subscription resets its failure count,
    and its undelivered events are sent again. `url`, `event_types` and `enabled` cannot be
    null; a null `description` clears it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": True}, {"event_types": ["customer.erased"]}]})
    not_null = ("url", "event_types", "enabled")

    url: str | None = Field(None, min_length=1, max_length=URL_MAX_LENGTH, pattern=URL_PATTERN)
    event_types: list[EVENT_TYPE] | None = Field(None, max_length=50)
    description: str | None = Field(None, max_length=1000)
    enabled: bool | None = None


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [EXAMPLE_READ]})

    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled (410 Gone, a run of failures, or by hand).")
    consecutive_failures: int = Field(description="Failed attempts since the last successful delivery.")
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    previous_secret_expires_at: dt.datetime | None = Field(
        description="After a rotation: until then deliveries are also signed with the secret it replaced (a second "
        "`v1,` signature in `webhook-signature`), so receivers can switch over without refusing any. Null when none."
    )


MAX_PREVIOUS_SECRET_SECONDS = 7 * 24 * 3600


class WebhookSecretRotation(InputModel):
    """How long the secret being replaced keeps signing beside the new one."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"previous_secret_expires_in_seconds": 3600}, {"previous_secret_expires_in_seconds": 0}]}
    )

    previous_secret_expires_in_seconds: int = Field(
        86_400,
        ge=0,
        le=MAX_PREVIOUS_SECRET_SECONDS,
        description="Seconds the replaced secret still signs deliveries beside the new one (default a day, at most a "
        "week); 0: it stops at once. Only the secret just replaced is kept: an older one stops now. Signing with the old "
        "secret gives nobody anything: what protects a receiver is that it stops accepting a secret it no longer trusts.",
    )


class WebhookWithSecret(WebhookRead):
    """The subscription with its signing secret: only in the answer that made (or rotated) it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{**EXAMPLE_READ, "secret": EXAMPLE_SECRET}]})

    secret: str = Field(description="`whsec_<base64>`: verify `webhook-signature` with it. Shown this once: keep it.")


class WebhookPage(Page[WebhookRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_READ], "next_cursor": None}]})


class AttemptRead(BaseModel):
    at: dt.datetime
    status_code: int | None = Field(description="The receiver's answer; null when none came (timeout, refused).")
    duration_ms: int
    error: str | None


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [EXAMPLE_DELIVERY]})

    id: uuid.UUID
    subscription_id: uuid.UUID
    webhook_id: str = Field(description="The `webhook-id` header: the event id, the same on every attempt.")
    event_type: str
    ordering_key: str = Field(description="The customer whose deliveries are kept in order ('' for none).")
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: int | None
    next_attempt_at: dt.datetime | None = Field(
        description="When it is tried next (pending only); null while an earlier pending delivery of the same customer "
        "goes first, and once finished."
    )
    attempt_log: list[AttemptRead] = Field(description="Every attempt (the last 50), oldest first.")
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    expires_at: dt.datetime = Field(description="Retries stop at this time; the delivery is then given up.")


class WebhookPing(BaseModel):
    """The `data` of a `webhook.ping` event (`POST /v1/webhooks/{id}/ping`)."""

    webhook: uuid.UUID = Field(description="The subscription pinged.")
    message: str


class DeliveryPage(Page[DeliveryRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_DELIVERY], "next_cursor": None}]})
