"""The CEM's local projection of CRM customers, fed by `crm.customers.v1`."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, Index, Integer, Numeric, String, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, utcnow
from cxkit.fields import address_key

# The key an address is found by everywhere in the CEM (`email_lower` of customer profiles,
# invitations, answers, feedback, interactions and suppressions; opt-outs' hashes): the kit's,
# which the CRM keys its customers with too.
email_key = address_key


class CustomerProfile(Base):
    """The customer as the CRM last announced it. `crm_version` only moves forward.

    A merged duplicate keeps its row as a pointer (`merged_into`) and no longer takes snapshots;
    an erased customer keeps only its id, `erased_at` and anonymous fields."""

    __tablename__ = "customer_profiles"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # Looked up by `email_lower` only, so not indexed: every announced customer would write
    # an entry that nothing reads.
    email: Mapped[str | None] = mapped_column(String(320))
    # `email_key(email)`: invitations, answers and feedback find a customer by email case-insensitively.
    email_lower: Mapped[str | None] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(50))
    company: Mapped[str | None] = mapped_column(String(200))
    lifecycle_stage: Mapped[str | None] = mapped_column(String(20))
    owner: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSONB, default=list)
    survey_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # When the customer asked here, from a survey link, for no more surveys (cem.suppressions'
    # `OptOut`): the CRM's snapshots then keep `survey_opt_out` set whatever they say.
    opted_out_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The sum of the customer's open deals (each below 10^16): as wide as the events' AmountSum.
    open_deal_value: Mapped[Decimal] = mapped_column(Numeric(38, 2), default=Decimal("0"), server_default=text("0"))
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

    # Only merged duplicates are in it (found by `merged_into = survivor` when a merge moves
    # them along): a new customer's profile writes no entry.
    __table_args__ = (Index("ix_customer_profiles_merged_into", "merged_into", postgresql_where=text("merged_into IS NOT NULL")),)


def _total() -> Mapped[int]:
    return mapped_column(BigInteger, default=0, server_default=text("0"))


class CustomerExperienceTotals(Base):
    """What the experience view's summary counts for one customer, so that reading it costs the
    same for a customer with a handful of answers and one with 200,000: their responses, the sum
    and number of their answered NPS/CSAT/CES scores (averages are sum / answers), their
    feedback, open follow-ups and suppressed invitations.

    Kept by the database, not by the code that writes those rows: statement-level triggers on
    `responses`, `scores`, `feedback`, `followups` and `suppressions` (migration cem0004) add each
    statement's net change per customer in the same transaction, whatever the statement is (a
    consumer's batch insert, an answer, a merge re-pointing rows, an erasure linking rows kept
    under an address, a follow-up closed, a survey deleted with its suppressions). Rows without
    a customer count nowhere until they are linked. `cem rebuild-experience-totals` recomputes
    every row from the tables (see `ExperienceTotalsRepository.rebuild`)."""

    __tablename__ = "customer_experience_totals"

    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    responses: Mapped[int] = _total()
    nps_answers: Mapped[int] = _total()
    nps_score_sum: Mapped[int] = _total()
    csat_answers: Mapped[int] = _total()
    csat_score_sum: Mapped[int] = _total()
    ces_answers: Mapped[int] = _total()
    ces_score_sum: Mapped[int] = _total()
    feedback: Mapped[int] = _total()
    open_followups: Mapped[int] = _total()
    suppressions: Mapped[int] = _total()
