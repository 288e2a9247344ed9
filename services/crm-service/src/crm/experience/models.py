"""The CRM's local copy of what the CEM service reports about its customers (`cem.feedback.v1`):
invitations (sent, reminded, withdrawn), suppressed invitations, survey answers, feedback,
follow-up requests, opt-outs and opt-ins. The
customer view and timeline read it, so they keep answering while the CEM service is down."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, SmallInteger, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base
from cxkit.db import UTCDateTime, utcnow

SURVEY_INVITED = "survey.invited"
SURVEY_THROTTLED = "survey.throttled"
RESPONSE_SUBMITTED = "survey.response.submitted"
FEEDBACK_RECEIVED = "feedback.received"
FOLLOWUP_REQUESTED = "followup.requested"
SURVEY_REMINDED = "survey.reminded"
INVITATION_CANCELLED = "survey.invitation_cancelled"
# Kept like the others; live, they also set or clear the customer's `survey_opt_out` (the CRM's own
# data, never replayed).
SURVEY_OPTED_OUT = "survey.opted_out"
SURVEY_OPTED_IN = "survey.opted_in"
# Not kept in the projection: it escalates the follow-up's task (the CRM's own data, never replayed).
FOLLOWUP_OVERDUE = "followup.overdue"
EXPERIENCE_KINDS = (
    SURVEY_INVITED,
    SURVEY_THROTTLED,
    RESPONSE_SUBMITTED,
    FEEDBACK_RECEIVED,
    FOLLOWUP_REQUESTED,
    SURVEY_REMINDED,
    INVITATION_CANCELLED,
    SURVEY_OPTED_OUT,
    SURVEY_OPTED_IN,
)


class ExperienceEvent(Base):
    """One CEM event about one customer; `kind` is the event type."""

    __tablename__ = "experience_events"

    # The CEM object the event is about (invitation, response, feedback, follow-up; for an opt-out
    # or opt-in the invitation whose link was used) in the kind's namespace, so the same object announced
    # twice under two event ids is one row.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("customers.id"))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # The CEM's id of the invitation, response, feedback or follow-up.
    ref_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    survey_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    survey_name: Mapped[str | None] = mapped_column(String(200))
    survey_kind: Mapped[str | None] = mapped_column(String(20))
    invitation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    response_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(100))
    metric: Mapped[str | None] = mapped_column(String(20))
    score: Mapped[float | None] = mapped_column(Float)
    scale_min: Mapped[int | None] = mapped_column(Integer)
    scale_max: Mapped[int | None] = mapped_column(Integer)
    category: Mapped[str | None] = mapped_column(String(20))
    # The customer's own words (a survey comment, a feedback text): personal, gone on erasure.
    text: Mapped[str | None] = mapped_column(Text)
    sentiment_label: Mapped[str | None] = mapped_column(String(20))
    sentiment_score: Mapped[float | None] = mapped_column(Float)
    # Why an invitation was suppressed or withdrawn, or why a follow-up was asked for.
    reason: Mapped[str | None] = mapped_column(String(500))
    # Which reminder of its invitation a `survey.reminded` is (1 for the first).
    reminder: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # The timeline's keyset order and the view's per-kind aggregates.
        Index("ix_experience_events_customer_id_occurred_at_id", "customer_id", "occurred_at", "id"),
        Index("ix_experience_events_customer_id_kind_occurred_at_id", "customer_id", "kind", "occurred_at", "id"),
    )


class ExperienceCount(Base):
    """The projection counted per kind, metric, category and sentiment label (the CRM dashboard's
    experience figures fold these few rows instead of every event): how many events, how many with
    a score, the sum of their scores, and how many scored at least `CSAT_SATISFIED_FROM` (4).

    Kept by the database, not by the code that writes events: statement-level triggers on
    `experience_events` (migration crm0022) add each statement's net change in the same
    transaction, into the writing connection's stripe (its backend pid modulo 16), as `score_days`
    in the CEM. The keys are never null: '' stands for none. `crm rebuild-experience-counts`
    recomputes every row from the events (`experience_counts_from_rows`)."""

    __tablename__ = "experience_counts"

    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    category: Mapped[str] = mapped_column(String(20), primary_key=True)
    sentiment_label: Mapped[str] = mapped_column(String(20), primary_key=True)
    stripe: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="0")
    events: Mapped[int] = mapped_column(BigInteger)
    scored: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)
    satisfied: Mapped[int] = mapped_column(BigInteger)
