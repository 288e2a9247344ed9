"""A sales pipeline and its ordered stages."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Numeric, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # At most one default pipeline, enforced by the database.
        Index("ix_pipelines_single_default", "is_default", unique=True, postgresql_where=text("is_default")),
        # Names are unique whatever their case ("Enterprise" and "ENTERPRISE" are one pipeline), as
        # the service checks; the index holds it under concurrent writes too (crm0026).
        Index("uq_pipelines_name_lower", text("lower(name)"), unique=True),
    )


class PipelineStage(Base):
    """A stage; names are unique within a pipeline (checked by the service, which locks the
    pipeline, so stages can be renamed and reordered in one update)."""

    __tablename__ = "pipeline_stages"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    pipeline_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("pipelines.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    probability: Mapped[Decimal] = mapped_column(Numeric(4, 3))
    is_won: Mapped[bool] = mapped_column(Boolean, default=False)
    is_lost: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_pipeline_stages_pipeline_id_position", "pipeline_id", "position"),)
