"""A customer (contact) record."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow

LIFECYCLE_STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "churned")


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str | None] = mapped_column(String(320))
    # lower(email), unique: the database itself refuses a case-insensitive duplicate.
    email_normalized: Mapped[str | None] = mapped_column(String(320), unique=True)
    # The customer's id in another system (shop, billing): unique when set, the key a batch
    # upsert or an import may match on instead of the email.
    external_id: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(50))
    company: Mapped[str | None] = mapped_column(String(200))
    lifecycle_stage: Mapped[str] = mapped_column(String(20), default="lead", index=True)
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    tags: Mapped[list[str]] = mapped_column(JSONB, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    source: Mapped[str | None] = mapped_column(String(100))
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    survey_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    __table_args__ = (
        Index("ix_customers_created_at_id", "created_at", "id"),
        Index("ix_customers_updated_at_id", "updated_at", "id"),
        Index("ix_customers_name_id", "name", "id"),
        # Indexes over columns that are null for nearly every customer hold only the others:
        # an import or a create then writes no entry in them (each is found by `= value`).
        Index("ix_customers_merged_into_id", "merged_into_id", postgresql_where=text("merged_into_id IS NOT NULL")),
        Index("ix_customers_campaign_id", "campaign_id", postgresql_where=text("campaign_id IS NOT NULL")),
        Index("uq_customers_external_id", "external_id", unique=True, postgresql_where=text("external_id IS NOT NULL")),
        # `tags @> '["vip"]'` and `ILIKE '%ada%'` answered from GIN indexes, so the tag filter
        # and the search stay fast at a million customers.
        Index("ix_customers_tags", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}),
        Index("ix_customers_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
        Index(
            "ix_customers_email_trgm",
            "email_normalized",
            postgresql_using="gin",
            postgresql_ops={"email_normalized": "gin_trgm_ops"},
        ),
        Index("ix_customers_company_trgm", "company", postgresql_using="gin", postgresql_ops={"company": "gin_trgm_ops"}),
    )
