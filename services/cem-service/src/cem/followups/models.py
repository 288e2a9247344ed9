"""Closing the loop: a detractor answer asks the CRM for a follow-up task."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, SmallInteger, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class Followup(Base):
    """Opened with `followup.requested`; closed when the CRM announces the task as done."""

    __tablename__ = "followups"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    response_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("responses.id", ondelete="CASCADE"), unique=True)
    survey_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    metric: Mapped[str] = mapped_column(String(10))
    score: Mapped[int] = mapped_column(SmallInteger)
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="open")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Who completed the CRM task that closed it, and which task (from `task.completed`).
    closed_by: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The SLA: when it must be closed (from the survey's `followup_sla` or `CEM_FOLLOWUP_SLA`),
    # and when the scheduler announced it overdue (`followup.overdue`, once).
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    overdue_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When the scheduler judged the re-survey of a closed follow-up (its survey's `resurvey_after_days`).
    resurveyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_followups_customer_created_id", "customer_id", "created_at", "id"),
        Index("ix_followups_status_created", "status", "created_at"),
        Index("ix_followups_survey_created", "survey_id", "created_at"),
        Index("ix_followups_created", "created_at"),
        # The inbox by urgency (`sort=due_at`), the open ones and the overdue ones (`overdue=true`) above all.
        Index("ix_followups_status_due_id", "status", "due_at", "id"),
        # The scheduler: open follow-ups past their due time not announced yet.
        Index("ix_followups_due_open", "due_at", postgresql_where=text("status = 'open' AND overdue_at IS NULL")),
        # The scheduler: closed follow-ups whose re-survey is not judged yet, per survey.
        Index(
            "ix_followups_survey_closed_to_resurvey",
            "survey_id",
            "closed_at",
            postgresql_where=text("status = 'closed' AND resurveyed_at IS NULL"),
        ),
    )
