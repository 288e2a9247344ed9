"""Every interaction query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm import keyset
from crm.interactions.models import CONTACT_TYPES, PURCHASE, Interaction
from cxkit.http.pagination import PageParams
from cxkit.pg_pool import UnnestInsert

SORT_KEYS = (keyset.SortKey("occurred_at", Interaction.occurred_at, "datetime"),)


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


def stats_query(customer_id: Any) -> Select[Any]:
    """The view's interaction statistics of one customer (a value or a `bindparam`)."""
    purchase = Interaction.type == PURCHASE
    return select(
        func.count(),
        func.max(Interaction.occurred_at),
        func.max(Interaction.occurred_at).filter(Interaction.type.in_(CONTACT_TYPES)),
        func.count().filter(purchase),
        func.min(Interaction.occurred_at).filter(purchase),
        func.max(Interaction.occurred_at).filter(purchase),
        func.sum(Interaction.amount).filter(purchase),
        func.avg(Interaction.amount).filter(purchase),
    ).where(Interaction.customer_id == customer_id)


def stats_of(row: Sequence[Any]) -> InteractionStats:
    count, last, contacted, purchases, first_p, last_p, total, average = row
    return InteractionStats(
        count=int(count),
        last_interaction_at=last,
        last_contacted_at=contacted,
        purchases=int(purchases or 0),
        first_purchase_at=first_p,
        last_purchase_at=last_p,
        purchase_total=Decimal(total) if total is not None else None,
        average_order_value=Decimal(average) if average is not None else None,
    )


class InteractionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, interaction_id: uuid.UUID) -> Interaction | None:
        return await self.session.get(Interaction, interaction_id)

    def add(self, interaction: Interaction) -> None:
        self.session.add(interaction)

    async def flush(self) -> None:
        await self.session.flush()

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
        return stats_of((await self.session.execute(stats_query(customer_id))).one())

    async def repoint_customer(self, old: uuid.UUID, new: uuid.UUID) -> None:
        await self.session.execute(update(Interaction).where(Interaction.customer_id == old).values(customer_id=new))

    async def erase_customer(self, customer_id: uuid.UUID) -> None:
        """Free text and free JSON go; type, time, channel, touchpoint and amount stay."""
        await self.session.execute(
            update(Interaction).where(Interaction.customer_id == customer_id).values(summary=None, metadata_={})
        )


# --- a poll's worth of `interaction.recorded` events (the consumer's hot path) -----------------
# Statements on the consumer's asyncpg connection (`cxkit.kafka.consumer.batch_connection`):
# one per poll whatever its size, each prepared once per connection.

_CUSTOMER_TARGETS = "SELECT id, merged_into_id FROM customers WHERE id = ANY($1::uuid[])"

# The columns of `InteractionBatch`, in order; `recorded_at` is one value for the batch.
BATCH_COLUMNS = (
    "id",
    "customer_id",
    "type",
    "channel",
    "touchpoint",
    "occurred_at",
    "summary",
    "amount",
    "currency",
    "metadata",
    "source",
)
_INSERT_BATCH = UnnestInsert(Interaction.__table__, BATCH_COLUMNS, per_batch=["recorded_at"])


async def customer_targets(conn: asyncpg.Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID | None]:
    """id -> merged_into_id for the customer ids that exist, in one query."""
    if not ids:
        return {}
    return {row[0]: row[1] for row in await conn.fetch(_CUSTOMER_TARGETS, ids)}


async def insert_interaction_batch(conn: asyncpg.Connection, columns: Sequence[Sequence[Any]], recorded_at: dt.datetime) -> int:
    """Insert a batch given column-wise (`BATCH_COLUMNS`; `metadata` as JSON text) in one
    statement; a row whose id exists is skipped. Returns the number of rows inserted."""
    return await _INSERT_BATCH.execute(conn, columns, recorded_at)
