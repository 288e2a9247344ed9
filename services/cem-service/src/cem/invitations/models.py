"""An invitation to answer a survey: an unguessable link for one customer (or one email)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, SmallInteger, String, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class Invitation(Base):
    """Made by the API, by an interaction that matched a survey's trigger, or by a survey's
    recurrence. A delayed one is `scheduled` (no link yet, `sent_at` null) until the scheduler
    sends it at `send_at`; it may be cancelled before that (the customer opted out or was erased,
    or the survey closed), and waits while its survey is back in draft."""

    __tablename__ = "invitations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("surveys.id", ondelete="RESTRICT"))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    email: Mapped[str | None] = mapped_column(String(320))
    # Lower-cased email: throttling by address, and linking to the customer once the CRM announces them.
    email_lower: Mapped[str | None] = mapped_column(String(320))
    # SHA-256 of the link's token: the token itself is handed out once and never stored. Null
    # while the invitation is scheduled: its link is made when it is sent.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(50))
    # api, trigger (an interaction), recurrence or followup (the re-survey after a closed follow-up).
    origin: Mapped[str] = mapped_column(String(20), default="api", server_default=text("'api'"))
    # The interaction that triggered it: a survey invites once per interaction.
    interaction_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When it is (or was) due to go out; throttling and fatigue count invitations by this time.
    send_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancel_reason: Mapped[str | None] = mapped_column(String(30))
    # Reminders sent (`survey.reminded`) and when the last one went out.
    reminders_sent: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))
    last_reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When the scheduler last judged a reminder due (sent, or suppressed by the fatigue rule):
    # the next one is due the survey's `after_days` after this (or after `sent_at`).
    reminder_judged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_invitations_survey_created", "survey_id", "created_at", "id"),
        # A customer's invitations (and one survey's to a customer) newest first, keyset on
        # (created_at, id): range scans in the order they are read, at any page.
        Index("ix_invitations_customer_created_id", "customer_id", "created_at", "id"),
        Index("ix_invitations_survey_customer_created_id", "survey_id", "customer_id", "created_at", "id"),
        Index("ix_invitations_touchpoint_created", "touchpoint", "created_at"),
        Index("ix_invitations_created", "created_at"),
        # Throttling and fatigue: a recipient's recent invitations.
        Index("ix_invitations_customer_send", "customer_id", "send_at"),
        Index("ix_invitations_email_lower_send", "email_lower", "send_at"),
        # The scheduler: unsent invitations by due time.
        Index("ix_invitations_sent_send", "sent_at", "send_at"),
        # Reminders: a survey's invitations out and not answered (the few a reminder may go to).
        Index(
            "ix_invitations_survey_unanswered",
            "survey_id",
            "expires_at",
            postgresql_where=text("answered_at IS NULL AND cancelled_at IS NULL AND sent_at IS NOT NULL"),
        ),
        # One invitation per (interaction, survey); interaction first, so the consumer's "which of
        # these interactions were judged already" is an index lookup, not a scan of the table.
        UniqueConstraint("interaction_id", "survey_id", name="uq_invitations_interaction_survey"),
    )


class InvitationLink(Base):
    """A further link to an invitation, handed out with a reminder (`survey.reminded`). It
    answers the same invitation as the first link does, which keeps working: it opens,
    answers and expires with the invitation. As for the first link, only the SHA-256 of its
    token is stored."""

    __tablename__ = "invitation_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    invitation_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("invitations.id", ondelete="CASCADE"), index=True)
    # Which reminder handed it out: 1 for the first.
    reminder: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
