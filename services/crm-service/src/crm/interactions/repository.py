"""Every interaction query."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import Select, bindparam, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers.lifecycle import CustomerErasure
from crm.interactions.models import CustomerInteractionStats, Interaction
from cxkit import keyset
from cxkit.http.pagination import PageParams
from cxkit.pg_pool import CompiledQuery, UnnestInsert, row_columns
from cxkit.repository import Repository

SORT_KEYS = (keyset.SortKey("occurred_at", Interaction.occurred_at, "datetime"),)


@dataclass(frozen=True, slots=True)
class InteractionFilters:
    customer_id: uuid.UUID | None = None
    type: str | None = None
    channel: str | None = None
    touchpoint: str | None = None
    occurred_from: dt.datetime | None = None
    occurred_to: dt.datetime | None = None


# The list's equality filters, by query parameter name.
_EQUAL = {
    "customer_id": Interaction.customer_id,
    "type": Interaction.type,
    "channel": Interaction.channel,
    "touchpoint": Interaction.touchpoint,
}


@functools.cache
def _page_query(given: tuple[str, ...], sort_token: str, after: keyset.CursorKind) -> CompiledQuery:
    """The list statement for these filters (by name), sort and kind of cursor, compiled once
    (the values are parameters)."""
    sort = keyset.parse_sort(sort_token, SORT_KEYS)
    stmt = select(*row_columns(Interaction))
    for name in given:
        if name in _EQUAL:
            stmt = stmt.where(_EQUAL[name] == bindparam(name, type_=_EQUAL[name].type))
    at = Interaction.occurred_at
    since, until = (bindparam(name, type_=at.type) if name in given else None for name in ("occurred_from", "occurred_to"))
    return CompiledQuery(keyset.page_of(keyset.within(stmt, at, since, until), sort, Interaction.id, keyset.After(after)))


def export_query(filters: InteractionFilters, sort: keyset.Sort, columns: Sequence[str]) -> CompiledQuery:
    """Every interaction the list shows with these filters, in its order, unpaged: `columns`
    of each (the table's names: `metadata`), for a CSV export through a cursor on the pool."""
    stmt = select(*(Interaction.__table__.c[name] for name in columns)).where(
        *(column == getattr(filters, name) for name, column in _EQUAL.items() if getattr(filters, name) is not None)
    )
    stmt = keyset.within(stmt, Interaction.occurred_at, filters.occurred_from, filters.occurred_to)
    return CompiledQuery(keyset.ordered(stmt, sort, Interaction.id))


async def list_page(pool: asyncpg.Pool, filters: InteractionFilters, sort: keyset.Sort, page: PageParams) -> list[asyncpg.Record]:
    """A page of interactions (one row more than asked), on the asyncpg pool: each record holds
    the model's attributes by name (`metadata_` included)."""
    after = keyset.decode_after(sort, page)
    values = {k: v for k, v in dataclasses.asdict(filters).items() if v is not None}
    query = _page_query(tuple(values), sort.token, after.kind)
    async with pool.acquire() as conn:
        return await query.fetch(conn, **values, **keyset.after_params(after, page))


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
    """The view's interaction statistics of one customer (a value or a `bindparam`): one
    primary-key lookup of the figures the database keeps (no row: no interactions yet)."""
    s = CustomerInteractionStats
    return select(
        s.interactions,
        s.last_interaction_at,
        s.last_contacted_at,
        s.purchases,
        s.first_purchase_at,
        s.last_purchase_at,
        s.purchase_total,
        s.purchase_amounts,
    ).where(s.customer_id == customer_id)


def stats_of(row: Sequence[Any] | None) -> InteractionStats:
    if row is None:
        return InteractionStats(0, None, None, 0, None, None, None, None)
    count, last, contacted, purchases, first_p, last_p, total, amounts = row
    return InteractionStats(
        count=int(count),
        last_interaction_at=last,
        last_contacted_at=contacted,
        purchases=int(purchases),
        first_purchase_at=first_p,
        last_purchase_at=last_p,
        purchase_total=Decimal(total) if amounts else None,
        average_order_value=Decimal(total) / amounts if amounts else None,
    )


async def rebuild_stats(session: AsyncSession) -> int:
    """Recompute every customer's statistics from the interactions (`crm
    rebuild-interaction-stats`), writers held off meanwhile. Returns the customers counted."""
    await session.execute(text("LOCK TABLE interactions IN SHARE MODE"))
    await session.execute(delete(CustomerInteractionStats))
    columns = ", ".join(c.name for c in CustomerInteractionStats.__table__.columns)
    result = await session.execute(
        text(f"INSERT INTO customer_interaction_stats ({columns}) SELECT * FROM interaction_stats_from_rows")
    )
    return int(result.rowcount)


class InteractionRepository(Repository[Interaction]):
    model = Interaction

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        """The statistics follow: the triggers on interactions recompute both customers'."""
        await self.session.execute(
            update(Interaction).where(Interaction.customer_id == duplicate_id).values(customer_id=survivor_id)
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """Free text and free JSON go; type, time, channel, touchpoint and amount stay (and so
        do the statistics, which hold no personal data)."""
        await self.session.execute(
            update(Interaction).where(Interaction.customer_id == erasure.customer_id).values(summary=None, metadata_={})
        )


# --- a poll's worth of `interaction.recorded` events (the consumer's hot path) -----------------
# Statements on the consumer's asyncpg connection (`cxkit.db.session_connection`):
# one per poll whatever its size, each prepared once per connection.

# A duplicate's own `erased_at` stands for its survivor's: erasing a survivor erases the
# duplicates merged into it, and an erased customer is never merged (merges are one hop).
_CUSTOMER_TARGETS = "SELECT id, merged_into_id, erased_at IS NOT NULL FROM customers WHERE id = ANY($1::uuid[])"

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


async def customer_targets(conn: asyncpg.Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[uuid.UUID | None, bool]]:
    """id -> (merged_into_id, erased: the customer, or the survivor it was merged into) for the
    customer ids that exist, in one query."""
    if not ids:
        return {}
    return {row[0]: (row[1], row[2]) for row in await conn.fetch(_CUSTOMER_TARGETS, ids)}


async def insert_interaction_batch(conn: asyncpg.Connection, columns: Sequence[Sequence[Any]], recorded_at: dt.datetime) -> int:
    """Insert a batch given column-wise (`BATCH_COLUMNS`; `metadata` as JSON text) in one
    statement; a row whose id exists is skipped. Returns the number of rows inserted."""
    return await _INSERT_BATCH.execute(conn, columns, recorded_at)
