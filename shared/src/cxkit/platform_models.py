"""Tables every service carries in its own database: API keys, idempotency records, outbox,
processed events. Each service mixes these into its own declarative Base, so its Alembic
migrations own them like any other table."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from cxkit.db import UTCDateTime, new_id, utcnow


class ApiKeyMixin:
    """An API key, stored as the SHA-256 of its secret (keys are 256-bit random, so a fast
    hash is the right one); the prefix lets people tell keys apart without the secret."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Refused from this time on (None: until revoked).
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IdempotencyKeyMixin:
    """The first answer to a write sent with an `Idempotency-Key`, replayed on retries."""

    __tablename__ = "idempotency_keys"

    principal: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    response_headers: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


# The outbox is a queue: every row is inserted, then updated once (stamped sent), so it makes a
# dead row per event. At the default autovacuum thresholds (20% of the table) a busy outbox of
# 100,000 rows carried 80,000 dead ones, and the relay's scan of the unsent-rows index walked
# them all each round (130 ms instead of 1 ms). Vacuumed after every few thousand changes
# instead, without the cost-based pauses. Set by each service's migration (`ALTER TABLE outbox
# SET (...)`) and reset by its downgrade.
OUTBOX_STORAGE = {
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "2000",
    "autovacuum_vacuum_cost_delay": "0",
    "autovacuum_analyze_scale_factor": "0",
    "autovacuum_analyze_threshold": "2000",
}

# Each page is filled only half by inserts, so that the relay's `sent_at` stamp writes the row's
# new version on the page it is on. PostgreSQL then logs only the bytes that changed; on a full
# page the new version goes to another page, logged whole, and that page is dirtied too. Stamping
# 200,000 sent events took PostgreSQL 7.8 s at the default (100) and 3.0 s at 50 (70: 3.3 s);
# inserting them took the same (2.1 s), and the table ends the same size, the space an insert
# leaves being what its update fills. A `make bench` import run wrote 0.38 GB less WAL. In the
# model (for `create_all`) and in each service's migration (crm0010, cem0011).
OUTBOX_FILLFACTOR = 50


class OutboxMixin:
    """An event written in the same transaction as the change it announces; the relay sends
    unsent rows in id order and stamps `sent_at` once the broker acknowledged them."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    event_type: Mapped[str] = mapped_column(String(255))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    @declared_attr.directive
    def __table_args__(cls) -> Any:
        # The relay only ever scans unsent rows; a partial index keeps that scan tiny.
        return (
            Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
            {"postgresql_with": {"fillfactor": OUTBOX_FILLFACTOR}},
        )


class ProcessedEventMixin:
    """(consumer, event id) of every event a consumer applied: a redelivery changes nothing."""

    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    @declared_attr.directive
    def __table_args__(cls) -> Any:
        # Ids older than PROCESSED_EVENTS_RETENTION_DAYS are deleted by time: a BRIN index (a
        # few pages for millions of rows written in time order, next to nothing per insert).
        # One Index per model class (both services' models live in one process in the tests).
        return (Index("ix_processed_events_processed_at", "processed_at", postgresql_using="brin"),)
