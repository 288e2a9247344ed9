"""A marketing campaign and its members (customers or leads) with their responses."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base, Money
from cxkit.db import UTCDateTime, new_id, utcnow


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="other")
    status: Mapped[str] = mapped_column(String(20), default="planned")
    description: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))
    start_date: Mapped[dt.date | None] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    budget: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_campaigns_created_at_id", "created_at", "id"),
        # Names are unique whatever their case ("Spring" and "SPRING" are one campaign), as the
        # service checks; the index holds it under concurrent writes too (crm0025).
        Index("uq_campaigns_name_lower", text("lower(name)"), unique=True),
    )


class CampaignMember(Base):
    """A customer or a lead targeted by a campaign; `responded_at` once they responded."""

    __tablename__ = "campaign_members"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    campaign_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("campaigns.id", ondelete="CASCADE"))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("customers.id"), index=True)
    lead_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    responded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    response: Mapped[str | None] = mapped_column(String(100))
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("campaign_id", "customer_id", name="uq_campaign_members_campaign_id_customer_id"),
        UniqueConstraint("campaign_id", "lead_id", name="uq_campaign_members_campaign_id_lead_id"),
        CheckConstraint("(customer_id IS NULL) <> (lead_id IS NULL)", name="one_member"),
        Index("ix_campaign_members_campaign_id_added_at_id", "campaign_id", "added_at", "id"),
    )
