"""An invitation that was not made, and why: kept so nobody is suppressed silently."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from cem.customers.models import email_key
from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow

_THROTTLED_EVENTS = uuid.UUID("8d3f5e2a-6b1c-4c7e-9f04-2a7d1b9e6c35")


def throttled_event_id(suppression_id: uuid.UUID) -> uuid.UUID:
    """The id of the `survey.throttled` event announcing a suppression. The event names no
    suppression, and one of a bare address carries no key: an erasure finds it by this id."""
    return uuid.uuid5(_THROTTLED_EVENTS, str(suppression_id))


class Suppression(Base):
    """A survey would have invited someone (after an interaction, at its recurrence, or when a
    scheduled invitation fell due) but a rule said no: `reason` is opted_out, erased,
    survey_throttle or fatigue. Announced as `survey.throttled` when the recipient is a customer."""

    __tablename__ = "suppressions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("surveys.id", ondelete="CASCADE"))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    email: Mapped[str | None] = mapped_column(String(320))
    email_lower: Mapped[str | None] = mapped_column(String(320))
    interaction_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # A scheduled invitation cancelled when it fell due.
    invitation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    # trigger, recurrence or schedule.
    origin: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_suppressions_created_id", "created_at", "id"),
        Index("ix_suppressions_customer_created_id", "customer_id", "created_at", "id"),
        Index("ix_suppressions_survey_created", "survey_id", "created_at"),
        Index("ix_suppressions_touchpoint_created", "touchpoint", "created_at"),
        Index("ix_suppressions_email_lower", "email_lower"),
        # An interaction is judged once per survey, however often it is delivered (interaction
        # first: the consumer looks the judged ones up by interaction).
        UniqueConstraint("interaction_id", "survey_id", name="uq_suppressions_interaction_survey"),
    )


def address_hash(email: str) -> str:
    """How an opted-out address is kept: the SHA-256 (hex) of its UTF-8 `email_key`. SQL hashes
    only keys Python made (`encode(sha256(convert_to(email_lower, 'UTF8')), 'hex')` of a stored
    `email_lower`), never an address it lower-cases itself: its lower() folds some letters
    otherwise, and the hash would not be found."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


class OptOut(Base):
    """A recipient asked, from a survey link, for no more surveys (`/r/{token}/unsubscribe`).
    The address is kept as its hash, so the request outlives an erasure without the address:
    it is never invited again, under any customer. Unique per address."""

    __tablename__ = "survey_opt_outs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    address_hash: Mapped[str | None] = mapped_column(String(64))
    # The invitation's customer, when it went to one (their profile gets `opted_out_at`).
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    # The invitation whose link was used.
    invitation_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def covers_address(self) -> bool:
        return self.address_hash is not None

    __table_args__ = (
        Index("uq_survey_opt_outs_address_hash", "address_hash", unique=True, postgresql_where=text("address_hash IS NOT NULL")),
        Index("ix_survey_opt_outs_customer_id", "customer_id", postgresql_where=text("customer_id IS NOT NULL")),
        # GET /v1/opt-outs: newest first, keyset on (created_at, id).
        Index("ix_survey_opt_outs_created_id", "created_at", "id"),
    )
