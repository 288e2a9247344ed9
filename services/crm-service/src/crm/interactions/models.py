"""An interaction: something the customer did or the company did with them (a purchase, a
call, a closed support ticket...), recorded over HTTP or consumed from `cx.interactions.v1`."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Numeric, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base, Money
from cxkit.db import UTCDateTime, utcnow


class Interaction(Base):
    __tablename__ = "interactions"

    # The event's `interaction_id`: a re-published event finds its row and adds nothing.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(String(100), index=True)
    channel: Mapped[str | None] = mapped_column(String(100))
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    summary: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    # `metadata` is reserved on declarative classes; the column keeps the contract's name.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    source: Mapped[str] = mapped_column(String(255))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_interactions_customer_id_occurred_at_id", "customer_id", "occurred_at", "id"),
        Index("ix_interactions_occurred_at_id", "occurred_at", "id"),
    )


class CustomerInteractionStats(Base):
    """A customer's interaction statistics, kept by the database as interactions arrive: the
    triggers of migration crm0004 add each inserting statement's rows, and recompute the
    customers whose rows an update or delete moved (a merge), in the same transaction. Reading
    them costs one primary-key lookup, whatever the customer's history
    (`crm rebuild-interaction-stats` recomputes every row from the interactions)."""

    __tablename__ = "customer_interaction_stats"

    # No foreign key of its own (crm0024): a row exists only while the customer has interactions,
    # and `interactions.customer_id` references the customer.
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    interactions: Mapped[int] = mapped_column(BigInteger)
    last_interaction_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_contacted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    purchases: Mapped[int] = mapped_column(BigInteger)
    first_purchase_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_purchase_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Sum and number of the purchase amounts given (the mean is their quotient).
    purchase_total: Mapped[Decimal] = mapped_column(Numeric)
    purchase_amounts: Mapped[int] = mapped_column(BigInteger)
