"""A customer (contact) record."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from sqlalchemy import BigInteger, Boolean, ForeignKey, Identity, Index, Integer, String, Text, Uuid, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow
from cxkit.fields import address_key

LIFECYCLE_STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "churned")


# The key a customer's email is unique on and found by (`email_normalized`): the kit's, which
# the CEM keys addresses with too.
normalized_email = address_key


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str | None] = mapped_column(String(320))
    # normalized_email(email), unique: the database itself refuses a case-insensitive duplicate.
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
    # When the flag's value was last asked for (migration crm0023): a survey wish's own time, else
    # the time of the change that set it (dated by a trigger); NULL while the flag is as created.
    # A survey wish older than this changes nothing.
    survey_opt_out_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
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
        # `tags @> '["vip"]'` answered from a GIN index, so the tag filter stays fast at a
        # million customers (the search's trigram index is below the class).
        Index("ix_customers_tags", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}),
    )


class CustomerChange(Base):
    """One change of a customer's fields, as the database saw it: written by the trigger
    `customers_record_change` (migration crm0016) in the transaction of every UPDATE of a
    customer that changes a field, whatever path made it. `changes` maps each field to
    `{"from": old, "to": new}`; who (`changed_by`, an API key's name) and how (`via`) come from
    the transaction's settings `crm.changed_by` / `crm.change_via` (`repository.note_author`)."""

    __tablename__ = "customer_changes"

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # The change's key on the customer's timeline (`customer_changed` entries; migration crm0018).
    id: Mapped[uuid.UUID] = mapped_column(Uuid, server_default=text("gen_random_uuid()"))
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("customers.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    changed_by: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str | None] = mapped_column(String(30))
    changes: Mapped[dict[str, Any]] = mapped_column(JSONB)

    __table_args__ = (
        Index("ix_customer_changes_customer_id_seq", "customer_id", "seq"),
        Index("uq_customer_changes_id", "id", unique=True),
        # The timeline's branch: the customer's changes newest first, a page at a time.
        Index("ix_customer_changes_customer_id_changed_at_id", "customer_id", "changed_at", "id"),
    )


# What made a recorded change (`customer_changes.via`, set by `repository.note_author`).
ChangeVia = Literal["update", "batch", "merge", "erasure", "lead_conversion", "deal", "survey_opt_out", "survey_opt_in"]
# Fields a customer's history leaves out: bookkeeping, and the lower-cased copy of the email.
UNTRACKED_FIELDS = ("id", "version", "created_at", "updated_at", "email_normalized", "survey_opt_out_at")
# What an erasure blanks (customers.service._PERSONAL and the attributes): their values leave
# the history too, the fact that they changed stays.
ERASED_FIELDS = ("email", "name", "phone", "company", "attributes")
TRACKED_FIELDS = tuple(c.name for c in Customer.__table__.columns if c.name not in UNTRACKED_FIELDS)


SEARCH_SEPARATOR = "\n"
"""What `customer_search_text` puts between name, email and company (migration crm0009)."""


def search_text(name: Any, email: Any, company: Any) -> Any:
    """`customer_search_text(name, email, company)`: the three joined by SEARCH_SEPARATOR, the
    value the search's trigram index holds (a SQL function of the migrations)."""
    return func.customer_search_text(name, email, company)


# `ILIKE '%ada%'` over name, email and company answered from one GIN index, so the search
# stays fast at a million customers. One index instead of one per column: each insert or
# update of a customer writes one list of trigrams, with those the three share once.
Index(
    "ix_customers_search_trgm",
    search_text(Customer.name, Customer.email_normalized, Customer.company).label("search_text"),
    postgresql_using="gin",
    postgresql_ops={"search_text": "gin_trgm_ops"},
)
