"""Every interaction query."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm import keyset
from crm.interactions.models import CONTACT_TYPES, PURCHASE, Interaction
from cxkit.db import dialect_of, insert_ignoring_conflicts
from cxkit.http.pagination import PageParams

SORT_KEYS = (keyset.SortKey("occurred_at", Interaction.occurred_at, "datetime"),)
# Rows per INSERT: PostgreSQL allows 32767 bind parameters, an interaction row uses 13.
_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class InteractionFilters:
    customer_id: uuid.UUID | None = None
    type: str | None = None
    channel: str | None = None
    touchpoint: str | None = None
    occurred_from: dt.datetime | None = None
    occurred_to: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class InteractionStats:
    count: int
    last_interaction_at: dt.datetime | None
    last_contacted_at: dt.datetime | None
    purchases: int
    first_purchase_at: dt.datetime | None
    last_purchase_at: dt.datetime | None
    purchase_total: Decimal | None
    average_order_value: Decimal | None


class InteractionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, interaction_id: uuid.UUID) -> Interaction | None:
        return await self.session.get(Interaction, interaction_id)

    def add(self, interaction: Interaction) -> None:
        self.session.add(interaction)

    async def flush(self) -> None:
        await self.session.flush()

    async def insert_many(self, rows: list[dict[str, Any]]) -> int:
        """Multi-row INSERT ... ON CONFLICT DO NOTHING: a row whose id exists is skipped."""
        table = Interaction.__table__
        inserted = 0
        for start in range(0, len(rows), _CHUNK):
            stmt = insert_ignoring_conflicts(dialect_of(self.session), table).values(rows[start : start + _CHUNK])
            result = await self.session.execute(stmt.returning(table.c.id))
            inserted += len(result.all())
        return inserted

    async def list_page(self, filters: InteractionFilters, sort: keyset.Sort, page: PageParams) -> list[Interaction]:
        stmt = select(Interaction)
        for column, value in (
            (Interaction.customer_id, filters.customer_id),
            (Interaction.type, filters.type),
            (Interaction.channel, filters.channel),
            (Interaction.touchpoint, filters.touchpoint),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if filters.occurred_from is not None:
            stmt = stmt.where(Interaction.occurred_at >= filters.occurred_from)
        if filters.occurred_to is not None:
            stmt = stmt.where(Interaction.occurred_at < filters.occurred_to)
        return list((await self.session.scalars(keyset.apply(stmt, sort, Interaction.id, page))).all())

    async def stats(self, customer_id: uuid.UUID) -> InteractionStats:
        """One aggregate over the customer's interactions (served by the customer index)."""
        purchase = Interaction.type == PURCHASE
        row = (
            await self.session.execute(
                select(
                    func.count(),
                    func.max(Interaction.occurred_at),
                    func.max(Interaction.occurred_at).filter(Interaction.type.in_(CONTACT_TYPES)),
                    func.count().filter(purchase),
                    func.min(Interaction.occurred_at).filter(purchase),
                    func.max(Interaction.occurred_at).filter(purchase),
                    func.sum(Interaction.amount).filter(purchase),
                    func.avg(Interaction.amount).filter(purchase),
                ).where(Interaction.customer_id == customer_id)
            )
        ).one()
        count, last, contacted, purchases, first_p, last_p, total, average = row
        return InteractionStats(
            count=int(count),
            last_interaction_at=_aware(last),
            last_contacted_at=_aware(contacted),
            purchases=int(purchases or 0),
            first_purchase_at=_aware(first_p),
            last_purchase_at=_aware(last_p),
            purchase_total=Decimal(total) if total is not None else None,
            average_order_value=Decimal(average) if average is not None else None,
        )

    async def repoint_customer(self, old: uuid.UUID, new: uuid.UUID) -> None:
        await self.session.execute(update(Interaction).where(Interaction.customer_id == old).values(customer_id=new))

    async def erase_customer(self, customer_id: uuid.UUID) -> None:
        """Free text and free JSON go; type, time, channel, touchpoint and amount stay."""
        await self.session.execute(
            update(Interaction).where(Interaction.customer_id == customer_id).values(summary=None, metadata_={})
        )


def _aware(value: Any) -> dt.datetime | None:
    """Aggregates bypass the column type: SQLite hands back naive text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
