"""A survey: its questions, its status, and the trigger and recurrence that send it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Index, Integer, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class Survey(Base):
    __tablename__ = "surveys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), default="draft")
    # The score this survey measures (nps, csat, ces), or null for a custom survey without one.
    metric: Mapped[str | None] = mapped_column(String(10))
    touchpoint: Mapped[str | None] = mapped_column(String(100))
    questions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    intro: Mapped[str | None] = mapped_column(Text)
    thank_you: Mapped[str | None] = mapped_column(Text)
    # The respondents' language (cem.surveys.texts.LANGUAGES): the respondent page speaks it.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    trigger_interaction_type: Mapped[str | None] = mapped_column(String(100))
    trigger_touchpoint: Mapped[str | None] = mapped_column(String(100))
    trigger_delay_minutes: Mapped[int | None] = mapped_column(Integer)
    trigger_throttle_days: Mapped[int | None] = mapped_column(Integer)
    recurrence_days: Mapped[int | None] = mapped_column(Integer)
    # Reminders to invitations not answered yet: the first `reminder_after_days` after the
    # invitation went out, each next one as long after the previous; at most `reminder_max`.
    reminder_after_days: Mapped[int | None] = mapped_column(Integer)
    reminder_max: Mapped[int | None] = mapped_column(Integer)
    # This survey's follow-up SLA: [{"max_score", "hours"}, ...], the first band holding the
    # score gives the follow-up's due time; null (or no band holding it): `CEM_FOLLOWUP_SLA`.
    followup_sla: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # A draft with `opens_at` becomes active at that moment (the scheduler opens it). Going back
    # to draft clears it (unless the same PATCH sets a new one), so the draft stays one.
    opens_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The survey closes by itself at `closes_at` (the scheduler sets it closed; answers stop at
    # that moment exactly), or with the answer that reaches `max_responses`. Null: never.
    closes_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    max_responses: Mapped[int | None] = mapped_column(Integer)
    # Ask a followed-up customer again this many days after their follow-up was closed.
    resurvey_after_days: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def closed_reason(self, now: dt.datetime) -> str | None:
        """Why the survey takes no answers or invitations now (`survey_draft`, `survey_closed`:
        closed, or past its `closes_at`), or None while it takes them."""
        if self.status != "active":
            return f"survey_{self.status}"
        if self.closes_at is not None and now >= self.closes_at:
            return "survey_closed"
        return None

    __table_args__ = (
        Index("ix_surveys_created_id", "created_at", "id"),
        # The interaction consumer looks up active surveys by the interaction's type.
        Index("ix_surveys_status_trigger", "status", "trigger_interaction_type"),
        Index("ix_surveys_touchpoint", "touchpoint"),
        Index("ix_surveys_trigger_touchpoint", "trigger_touchpoint"),
    )
