"""A touchpoint: a moment where the customer meets the company (checkout, support call...)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, Index, Integer, Numeric, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class Touchpoint(Base):
    __tablename__ = "touchpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(50))
    journey_stage: Mapped[str | None] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Text)
    target_metric: Mapped[str | None] = mapped_column(String(10))
    target_score: Mapped[float | None] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_touchpoints_key_id", "key", "id"),)


class TouchpointInteraction(Base):
    """An interaction the CEM heard about on `cx.interactions.v1` (a purchase, a closed ticket...),
    for per-touchpoint counts, the customer's touchpoint history and survey triggers.

    `interaction_id` is the event's, or derived from the CloudEvent's source and id (as the CRM
    does), so a redelivered event is stored once. An interaction for an email nobody announced
    keeps the email until the CRM announces a customer with it; then it is linked."""

    __tablename__ = "touchpoint_interactions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    interaction_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    email: Mapped[str | None] = mapped_column(String(320))
    email_lower: Mapped[str | None] = mapped_column(String(320))
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(100))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    summary: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    # The CloudEvent's source: which system reported it.
    source: Mapped[str | None] = mapped_column(String(255))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_touchpoint_interactions_touchpoint_occurred", "touchpoint", "occurred_at"),
        # A customer's history, newest first: a range scan in the order it is read.
        Index("ix_touchpoint_interactions_customer_occurred_interaction", "customer_id", "occurred_at", "interaction_id"),
        # Only the rows no customer is linked to yet: every query by address asks for those alone
        # (linking them when the CRM announces the address, erasure, a customer's data export).
        Index("ix_touchpoint_interactions_email_lower", "email_lower", postgresql_where=text("customer_id IS NULL")),
    )
