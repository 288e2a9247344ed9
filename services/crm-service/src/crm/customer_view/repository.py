"""The view's and the timeline's queries. The view runs the domains' own statements, compiled
once, on a plain asyncpg connection. For the timeline, one UNION ALL finds a page of (kind,
id, time) across the customer's history, then one query per kind on the page loads the details."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import Select, Uuid, bindparam, literal, select, tuple_, union_all
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
from cxkit.pg_pool import CompiledQuery, Row

Cursor = tuple[dt.datetime, str, uuid.UUID]
OPEN_DEALS_SHOWN = 50
OPEN_TASKS_SHOWN = 20


def _branches(customer_id: uuid.UUID) -> dict[str, Select[Any]]:
    def row(kind: str, id_col: Any, at_col: Any) -> list[Any]:
        return [literal(kind).label("kind"), id_col.label("id"), at_col.label("at")]

    experience = {
        # One branch per kind, each answered by the (customer_id, kind, occurred_at) index.
        kind: select(*row(kind, ExperienceEvent.id, ExperienceEvent.occurred_at)).where(
            ExperienceEvent.customer_id == customer_id, ExperienceEvent.kind == kind
        )
        for kind in EXPERIENCE_KINDS
    }
    return experience | {
        "interaction": select(*row("interaction", Interaction.id, Interaction.occurred_at)).where(
            Interaction.customer_id == customer_id
        ),
        "deal_stage_changed": select(*row("deal_stage_changed", DealStageChange.id, DealStageChange.changed_at))
        .join(Deal, Deal.id == DealStageChange.deal_id)
        .where(Deal.customer_id == customer_id),
        "task_created": select(*row("task_created", Task.id, Task.created_at)).where(Task.customer_id == customer_id),
        "task_completed": select(*row("task_completed", Task.id, Task.completed_at)).where(
            Task.customer_id == customer_id, Task.completed_at.is_not(None)
        ),
        "document_added": select(*row("document_added", Document.id, Document.created_at)).where(
            Document.customer_id == customer_id
        ),
    }


class TimelineRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, customer_id: uuid.UUID, kinds: list[str], before: Cursor | None, limit: int) -> list[Cursor]:
        """Newest first, keyset on (at, kind, id); one row more than asked."""
        branches = [b for kind, b in _branches(customer_id).items() if kind in kinds]
        entries = union_all(*branches).subquery("entries")
        stmt = select(entries.c.kind, entries.c.id, entries.c.at)
        if before is not None:
            stmt = stmt.where(tuple_(entries.c.at, entries.c.kind, entries.c.id) < tuple_(*before))
        stmt = stmt.order_by(entries.c.at.desc(), entries.c.kind.desc(), entries.c.id.desc()).limit(limit + 1)
        return [(a, k, i) for k, i, a in await self.session.execute(stmt)]

    async def interactions(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Interaction]:
        return (
            {r.id: r for r in (await self.session.scalars(select(Interaction).where(Interaction.id.in_(ids)))).all()}
            if ids
            else {}
        )

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


_CUSTOMER_ID = bindparam("customer_id", type_=Uuid)
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
