"""Unsolicited feedback from any channel, with its sentiment."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Float, Index, SmallInteger, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    email: Mapped[str | None] = mapped_column(String(320))
    # `email_key(email)`, stored: feedback given under an address no customer was known by is
    # linked to the customer the CRM announces with it, and found by an erasure or a data
    # export, by this key (SQL's lower() folds some letters otherwise than Python's).
    email_lower: Mapped[str | None] = mapped_column(String(320))
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(50))
    # Null once the customer's personal data was erased (the sentiment and rating stay).
    text: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[float | None] = mapped_column(Float)
    rating_scale_min: Mapped[int | None] = mapped_column(SmallInteger)
    rating_scale_max: Mapped[int | None] = mapped_column(SmallInteger)
    sentiment_label: Mapped[str] = mapped_column(String(10))
    sentiment_score: Mapped[float] = mapped_column(Float)
    external_ref: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_feedback_received_id", "received_at", "id"),
        Index("ix_feedback_customer_received_id", "customer_id", "received_at", "id"),
        Index("ix_feedback_touchpoint_received", "touchpoint", "received_at"),
        Index("ix_feedback_sentiment_received", "sentiment_label", "received_at"),
        Index("ix_feedback_channel_received", "channel", "received_at"),
        # The same review or ticket imported twice is one piece of feedback.
        UniqueConstraint("channel", "external_ref", name="uq_feedback_channel_external_ref"),
    )


# Feedback given under an address no customer was known by (linked when the CRM announces
# one, found by an erasure or a data export, by its `email_lower`); only those rows are in it.
Index("ix_feedback_unlinked_email", Feedback.email_lower, postgresql_where=Feedback.customer_id.is_(None))
