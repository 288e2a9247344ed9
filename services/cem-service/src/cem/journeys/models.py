"""A customer journey: named stages in order, each with its touchpoints in order."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cem.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class Journey(Base):
    __tablename__ = "journeys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_journeys_name_id", "name", "id"),)


class JourneyStage(Base):
    """A stage of a journey (awareness, purchase, onboarding...), at `position` (0-based)."""

    __tablename__ = "journey_stages"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    journey_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("journeys.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("journey_id", "position", name="uq_journey_stages_journey_position"),
        UniqueConstraint("journey_id", "name", name="uq_journey_stages_journey_name"),
    )


class JourneyStep(Base):
    """A touchpoint at `position` (0-based) within its stage; a touchpoint appears once per journey."""

    __tablename__ = "journey_steps"

    stage_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("journey_stages.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    journey_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("journeys.id", ondelete="CASCADE"))
    touchpoint_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("touchpoints.id", ondelete="RESTRICT"), index=True)

    __table_args__ = (UniqueConstraint("journey_id", "touchpoint_id", name="uq_journey_steps_journey_touchpoint"),)
