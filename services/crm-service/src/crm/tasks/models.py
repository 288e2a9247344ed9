"""A task: a follow-up someone in the company owes a customer."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow

# Tasks made for the CEM's follow-up requests; `origin_ref` is the follow-up id.
FOLLOWUP_ORIGIN = "followup"


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("customers.id"))
    deal_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("deals.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20), default="open")
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    owner: Mapped[str | None] = mapped_column(String(200))
    # Where the task came from: `manual`, or `followup` with the CEM's follow-up id as ref.
    origin: Mapped[str] = mapped_column(String(100), default="manual")
    origin_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    completed_by: Mapped[str | None] = mapped_column(String(200))
    # A follow-up past its SLA (`followup.overdue`) gets a second owner and urgent priority, once.
    escalated_to: Mapped[str | None] = mapped_column(String(200))
    escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When `task.overdue` announced that the due time passed; cleared by a new due time or a reopening.
    overdue_announced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_tasks_customer_id_status", "customer_id", "status"),
        # A customer's tasks by either sort and the timeline's task branches: index range scans.
        Index("ix_tasks_customer_id_created_at_id", "customer_id", "created_at", "id"),
        Index("ix_tasks_customer_id_due_at_id", "customer_id", "due_at", "id"),
        Index(
            "ix_tasks_customer_id_completed_at_id",
            "customer_id",
            "completed_at",
            "id",
            postgresql_where=text("completed_at IS NOT NULL"),
        ),
        # The open tasks by due time (the default list and the overdue one), everyone's and a rep's.
        Index("ix_tasks_status_due_at_id", "status", "due_at", "id"),
        Index("ix_tasks_owner_status_due_at_id", "owner", "status", "due_at", "id"),
        Index("ix_tasks_created_at_id", "created_at", "id"),
        Index("ix_tasks_updated_at_id", "updated_at", "id"),  # a sync: updated_from, sort=updated_at
        Index("ix_tasks_due_at_id", "due_at", "id"),
        # The open tasks whose passing due time is still to be announced (`task.overdue`).
        Index(
            "ix_tasks_due_at_unannounced",
            "due_at",
            postgresql_where=text("status = 'open' AND due_at IS NOT NULL AND overdue_announced_at IS NULL"),
        ),
        # One task per CEM follow-up, however often its request arrives.
        Index("uq_tasks_followup_origin_ref", "origin_ref", unique=True, postgresql_where=text("origin = 'followup'")),
    )
