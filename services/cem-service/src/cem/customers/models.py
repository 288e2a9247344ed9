"""The CEM's local projection of CRM customers, fed by `crm.customers.v1`."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import Boolean, Index, Integer, Numeric, String, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, utcnow


class CustomerProfile(Base):
    """The customer as the CRM last announced it. `crm_version` only moves forward.

    A merged duplicate keeps its row as a pointer (`merged_into`) and no longer takes snapshots;
    an erased customer keeps only its id, `erased_at` and anonymous fields."""

    __tablename__ = "customer_profiles"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    # Lower-cased email: invitations and feedback find a customer by email case-insensitively.
    email_lower: Mapped[str | None] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(50))
    company: Mapped[str | None] = mapped_column(String(200))
    lifecycle_stage: Mapped[str | None] = mapped_column(String(20))
    owner: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSONB, default=list)
    survey_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    open_deal_value: Mapped[Decimal] = mapped_column(Numeric(18, 2), default=Decimal("0"), server_default=text("0"))
    # The CRM time `open_deal_value` reflects: deal events and snapshots only move it forward.
    open_deal_value_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The lead this customer was converted from (`lead.converted`).
    converted_lead_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    converted_deal_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    converted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    merged_into: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    crm_version: Mapped[int] = mapped_column(Integer, default=0)
    crm_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    crm_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_customer_profiles_merged_into", "merged_into"),)
