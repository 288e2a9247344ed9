"""The view's and the timeline's queries. The view runs the domains' own statements, compiled
once, on a plain asyncpg connection. For the timeline, one UNION ALL finds a page of (kind,
id, time) across the customer's history, then one query per kind on the page loads the details."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import DateTime, Integer, Select, Uuid, any_, bindparam, literal, select, tuple_, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from crm.deals.models import Deal, DealStageChange
from crm.deals.repository import as_money, open_deals_query, open_value_query
from crm.documents.models import Document
from crm.experience.models import EXPERIENCE_KINDS, ExperienceEvent
from crm.experience.repository import ExperienceTotals, latest_by_key, latest_condition, totals_of, totals_query
from crm.interactions.models import Interaction
from crm.interactions.repository import InteractionStats, stats_of, stats_query
from crm.tasks.models import Task
from crm.tasks.repository import open_for_customer_query
from cxkit.db import session_connection
from cxkit.pg_pool import CompiledQuery, Row

Cursor = tuple[dt.datetime, str, uuid.UUID]
OPEN_DEALS_SHOWN = 50
OPEN_TASKS_SHOWN = 20
_CUSTOMER_ID = bindparam("customer_id", type_=Uuid)


@dataclass(frozen=True, slots=True)
class _Branch:
    """One kind of timeline entry: the customer's rows of it, with their time and id columns."""

    kind: str
    stmt: Select[Any]
    at: Any
    id: Any


def _branches(customer_id: uuid.UUID) -> list[_Branch]:
    experience = [
        # One branch per kind, each answered by the (customer_id, kind, occurred_at) index.
        _Branch(
            kind,
            select().where(ExperienceEvent.customer_id == customer_id, ExperienceEvent.kind == kind),
            ExperienceEvent.occurred_at,
            ExperienceEvent.id,
        )
        for kind in EXPERIENCE_KINDS
    ]
    return [
        *experience,
        _Branch("interaction", select().where(Interaction.customer_id == customer_id), Interaction.occurred_at, Interaction.id),
        _Branch(
            "deal_stage_changed",
            select().join_from(DealStageChange, Deal, Deal.id == DealStageChange.deal_id).where(Deal.customer_id == customer_id),
            DealStageChange.changed_at,
            DealStageChange.id,
        ),
        _Branch("task_created", select().where(Task.customer_id == customer_id), Task.created_at, Task.id),
        _Branch(
            "task_completed",
            select().where(Task.customer_id == customer_id, Task.completed_at.is_not(None)),
            Task.completed_at,
            Task.id,
        ),
        _Branch("document_added", select().where(Document.customer_id == customer_id), Document.created_at, Document.id),
    ]


_AT = bindparam("at", type_=DateTime(timezone=True))
_ENTRY_ID = bindparam("entry_id", type_=Uuid)
_LIMIT = bindparam("limit", type_=Integer)


def _branch_page(branch: _Branch, cursor_kind: str | None) -> Select[Any]:
    """The branch's newest `limit` entries before the cursor (`at`, `cursor_kind`,
    `entry_id`), in the order of the whole timeline (at, kind, id): the kind is fixed within a
    branch, so the cursor becomes a range on (at, id) and the branch is one index range scan
    that stops after `limit` rows."""
    stmt = branch.stmt.add_columns(literal(branch.kind).label("kind"), branch.id.label("id"), branch.at.label("at"))
    if cursor_kind is not None:
        if branch.kind < cursor_kind:
            stmt = stmt.where(branch.at <= _AT)
        elif branch.kind == cursor_kind:
            stmt = stmt.where(tuple_(branch.at, branch.id) < tuple_(_AT, _ENTRY_ID))
        else:
            stmt = stmt.where(branch.at < _AT)
    return stmt.order_by(branch.at.desc(), branch.id.desc()).limit(_LIMIT)


@functools.cache
def page_query(kinds: tuple[str, ...], cursor_kind: str | None) -> CompiledQuery:
    """A timeline page's statement for these kinds and the cursor's kind, built and compiled
    once (there are a few such shapes)."""
    branches = [_branch_page(b, cursor_kind) for b in _branches(_CUSTOMER_ID) if b.kind in kinds]
    entries = union_all(*(b.subquery().select() for b in branches)).subquery("entries")
    return CompiledQuery(
        select(entries.c.kind, entries.c.id, entries.c.at)
        .order_by(entries.c.at.desc(), entries.c.kind.desc(), entries.c.id.desc())
        .limit(_LIMIT)
    )


_INTERACTION_ENTRIES = CompiledQuery(
    select(
        Interaction.id,
        Interaction.type,
        Interaction.channel,
        Interaction.touchpoint,
        Interaction.summary,
        Interaction.amount,
        Interaction.currency,
    ).where(Interaction.id == any_(bindparam("ids", type_=ARRAY(Uuid))))
)


class TimelineRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, customer_id: uuid.UUID, kinds: list[str], before: Cursor | None, limit: int) -> list[Cursor]:
        """Newest first, keyset on (at, kind, id); one row more than asked. Each kind gives
        at most that many of its own newest entries (an index range scan), and only those are
        merged: a page costs the same at any depth and however long the history."""
        conn = await session_connection(self.session)
        query = page_query(tuple(sorted(kinds)), before[1] if before else None)
        params: dict[str, Any] = {"customer_id": customer_id, "limit": limit + 1}
        if before is not None:
            params |= {"at": before[0], "entry_id": before[2]}
        return [(r["at"], r["kind"], r["id"]) for r in await query.fetch(conn, **params)]

    async def interactions(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
        """The page's interactions, as the plain rows the entries are made of."""
        if not ids:
            return {}
        conn = await session_connection(self.session)
        return {r["id"]: r for r in await _INTERACTION_ENTRIES.fetch(conn, ids=ids)}

    async def stage_changes(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[DealStageChange, str]]:
        if not ids:
            return {}
        stmt = (
            select(DealStageChange, Deal.title).join(Deal, Deal.id == DealStageChange.deal_id).where(DealStageChange.id.in_(ids))
        )
        return {h.id: (h, title) for h, title in await self.session.execute(stmt)}

    async def tasks(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Task]:
        return {r.id: r for r in (await self.session.scalars(select(Task).where(Task.id.in_(ids)))).all()} if ids else {}

    async def documents(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Document]:
        return {r.id: r for r in (await self.session.scalars(select(Document).where(Document.id.in_(ids)))).all()} if ids else {}


_STATS = CompiledQuery(stats_query(_CUSTOMER_ID))
_OPEN_DEALS = CompiledQuery(open_deals_query(_CUSTOMER_ID, OPEN_DEALS_SHOWN))
_OPEN_VALUE = CompiledQuery(open_value_query(_CUSTOMER_ID))
_OPEN_TASKS = CompiledQuery(open_for_customer_query(_CUSTOMER_ID, OPEN_TASKS_SHOWN))
_EXPERIENCE_TOTALS = CompiledQuery(totals_query(_CUSTOMER_ID))
_EXPERIENCE_LATEST = CompiledQuery(select(ExperienceEvent.__table__).where(latest_condition(_CUSTOMER_ID)))


@dataclass(frozen=True, slots=True)
class ViewRows:
    """What the joined view shows besides the record, as plain rows."""

    stats: InteractionStats
    open_deals: list[asyncpg.Record]
    open_value: Decimal
    open_tasks: list[asyncpg.Record]
    experience: ExperienceTotals
    latest: dict[str, Row]


async def read_view_rows(conn: asyncpg.Connection, customer_id: uuid.UUID) -> ViewRows:
    """The view's queries, each compiled once, on one asyncpg connection (the same statements
    the domain repositories run through the ORM)."""
    return ViewRows(
        stats=stats_of(await _STATS.fetchrow(conn, customer_id=customer_id)),
        open_deals=await _OPEN_DEALS.fetch(conn, customer_id=customer_id),
        open_value=as_money(await _OPEN_VALUE.fetchval(conn, customer_id=customer_id)),
        open_tasks=await _OPEN_TASKS.fetch(conn, customer_id=customer_id),
        experience=totals_of(await _EXPERIENCE_TOTALS.fetchrow(conn, customer_id=customer_id)),
        latest=latest_by_key(Row(r) for r in await _EXPERIENCE_LATEST.fetch(conn, customer_id=customer_id)),
    )
