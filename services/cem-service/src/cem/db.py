"""The CEM's declarative Base and the platform tables it carries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from cxkit.db import dialect_of, insert_ignoring_conflicts, new_metadata
from cxkit.platform_models import ApiKeyMixin, IdempotencyKeyMixin, OutboxMixin, ProcessedEventMixin

SOURCE = "urn:cx:cem-service"


class Base(DeclarativeBase):
    metadata = new_metadata()


class ApiKey(ApiKeyMixin, Base):
    pass


class IdempotencyKey(IdempotencyKeyMixin, Base):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


async def insert_skipping_existing(
    session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], returning_column: str
) -> set[Any]:
    """INSERT ... ON CONFLICT DO NOTHING for many rows, returning the key values actually
    inserted. Sent as one executemany, which SQLAlchemy turns into a few multi-row statements
    compiled once (a `values([...])` statement is compiled anew for every batch)."""
    if not rows:
        return set()
    stmt = insert_ignoring_conflicts(dialect_of(session), table).returning(table.c[returning_column])
    result = await session.execute(stmt, list(rows))
    return {row[0] for row in result}
