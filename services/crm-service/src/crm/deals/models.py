"""A deal (opportunity) moving through a pipeline, and its append-only stage history."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base, Money
from cxkit.db import UTCDateTime, new_id, utcnow


class Deal(Base):
    __tablename__ = "deals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("customers.id"))
    title: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    pipeline_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("pipelines.id"))
    stage_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("pipeline_stages.id"))
    # Derived from the stage (is_won / is_lost), kept on the row so lists and sums filter on it.
    status: Mapped[str] = mapped_column(String(10), default="open")
    lost_reason: Mapped[str | None] = mapped_column(String(500))
    expected_close_date: Mapped[dt.date | None] = mapped_column(Date)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    stage_entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_deals_customer_id_status", "customer_id", "status"),
        Index("ix_deals_customer_id_created_at_id", "customer_id", "created_at", "id"),
        Index("ix_deals_pipeline_id_stage_id_status", "pipeline_id", "stage_id", "status"),
        Index("ix_deals_created_at_id", "created_at", "id"),
        Index("ix_deals_updated_at_id", "updated_at", "id"),  # a sync: updated_from, sort=updated_at
        Index("ix_deals_amount_id", "amount", "id"),
        Index("ix_deals_expected_close_date_id", "expected_close_date", "id"),
        # The forecast: the open deals by expected close date.
        Index("ix_deals_status_expected_close_date_id", "status", "expected_close_date", "id"),
    )


class DealStageChange(Base):
    """One move of a deal (its creation is the first, from no stage). Rows are only ever
    inserted: the funnel's conversion and time-in-stage figures are computed from them."""

    __tablename__ = "deal_stage_changes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    deal_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("deals.id", ondelete="CASCADE"))
    # 1, 2, 3... per deal: the order of moves even when two share a timestamp.
    seq: Mapped[int] = mapped_column(Integer)
    pipeline_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    from_stage_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    from_stage: Mapped[str | None] = mapped_column(String(100))
    to_stage_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    to_stage: Mapped[str] = mapped_column(String(100))
    to_status: Mapped[str] = mapped_column(String(10))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    changed_by: Mapped[str | None] = mapped_column(String(200))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("deal_id", "seq", name="uq_deal_stage_changes_deal_id_seq"),)
