"""Webhook tables every service carries: subscriptions (where to send which events, with the
signing secret) and deliveries (one per event and subscription, with its attempt log). Each
service mixes them into its own declarative Base, as it does the platform tables."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Identity, Index, Integer, LargeBinary, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from cxkit.db import UTCDateTime, new_id, utcnow

# `status` of a delivery: waiting to be (re)sent, received (2xx), or given up.
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
# The type of a test delivery (`POST /v1/webhooks/{id}/ping`): sent once, not counted against the webhook.
PING = "webhook.ping"
DELIVERY_STATUSES = (PENDING, SUCCEEDED, FAILED)


class WebhookSubscriptionMixin:
    """A receiver: its URL, the event types it wants (empty: all), its signing secret
    (`whsec_<base64>`, needed in clear to sign, shown to the client once) and whether it is
    enabled. `consecutive_failures` counts failed attempts since the last success; past the
    configured run the subscription is disabled (`disabled_reason` says why)."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSONB, default=list)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret: Mapped[str] = mapped_column(String(100))
    # The secret a rotation replaced, which still signs deliveries beside the new one until
    # `previous_secret_expires_at` (receivers switch over without refusing any).
    previous_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDeliveryMixin:
    """One event for one subscription. `seq` orders a subscription's deliveries (and those of
    one `ordering_key`, the customer, among them); `webhook_id` (the event id) is the same on
    every attempt, so receivers deduplicate on it. `attempt_log` keeps each attempt's time,
    response code, duration and error."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)

    @declared_attr
    def subscription_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(Uuid, ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))

    webhook_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(255))
    ordering_key: Mapped[str] = mapped_column(String(255), default="")  # the outbox key ('' for none)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Pending: when it is tried next, or None while an earlier pending delivery of its customer
    # goes first (it gets a time when that one finishes). Finished: None.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Retries stop here (queued + `webhook_max_age_hours`; a manual retry starts a new window).
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    @declared_attr.directive
    def __table_args__(cls) -> Any:
        return (
            # A redelivered outbox row (a relay retry) makes no second delivery.
            Index("uq_webhook_deliveries_subscription_webhook", "subscription_id", "webhook_id", unique=True),
            # The delivery log: a subscription's deliveries, newest first.
            Index("ix_webhook_deliveries_subscription_seq", "subscription_id", "seq"),
            # A customer's pending deliveries in order (is there one before this one?).
            Index(
                "ix_webhook_deliveries_pending",
                "subscription_id",
                "ordering_key",
                "seq",
                postgresql_where=text("status = 'pending'"),
            ),
            # What the worker claims from: the pending deliveries with a due time (a customer's
            # next one, or one whose retry is scheduled), soonest first. Those waiting behind an
            # earlier pending delivery of their customer have none, so a long queue behind a
            # failing receiver is never read per round.
            Index(
                "ix_webhook_deliveries_due",
                "next_attempt_at",
                "seq",
                postgresql_where=text("status = 'pending' AND next_attempt_at IS NOT NULL"),
            ),
        )
