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
from sqlalchemy import DateTime, Integer, Select, String, Uuid, any_, bindparam, literal, select, tuple_, union_all
from sqlalchemy.dialects.postgresql import ARRAY

from crm.customers.models import CustomerChange
from crm.db import as_money
from crm.deals.models import Deal, DealStageChange
from crm.deals.repository import open_deals_query, open_value_query
from crm.documents.models import Document
from crm.experience.models import EXPERIENCE_KINDS, ExperienceEvent
from crm.experience.repository import ExperienceTotals, latest_by_key, latest_condition, totals_of, totals_query
from crm.interactions.models import Interaction
from crm.interactions.repository import InteractionStats, stats_of, stats_query
from crm.tasks.models import FOLLOWUP_ORIGIN, Task
from crm.tasks.repository import open_for_customer_query
from cxkit.keyset import Kind
from cxkit.pg_pool import CompiledQuery, Nested, Row, row_columns

Cursor = tuple[dt.datetime, str, uuid.UUID]
CURSOR_KINDS: tuple[Kind, ...] = ("datetime", "str", "uuid")  # (at, kind, id) of the previous page's last entry
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
        _Branch(
            "customer_changed",
            select().where(CustomerChange.customer_id == customer_id),
            CustomerChange.changed_at,
            CustomerChange.id,
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


ENTRY_KINDS = frozenset(b.kind for b in _branches(_CUSTOMER_ID))
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


# A shape is (the kinds asked for, the cursor's kind): the kinds are any subset of the fifteen
# (2**15 of them, from `?kind=`), so compiled shapes are kept by recent use, not all (each is
# some 30 KB). Unpaged and paged shapes of the unfiltered timeline are 16 of them.
PAGE_QUERIES_KEPT = 128


@functools.lru_cache(maxsize=PAGE_QUERIES_KEPT)
def page_query(kinds: tuple[str, ...], cursor_kind: str | None) -> CompiledQuery:
    """A timeline page's statement for these kinds and the cursor's kind (one of `ENTRY_KINDS`:
    the service refuses a cursor of another), built and compiled once per shape."""
    if cursor_kind is not None and cursor_kind not in ENTRY_KINDS:
        raise ValueError(f"not a timeline entry kind: {cursor_kind!r}")
    branches = [_branch_page(b, cursor_kind) for b in _branches(_CUSTOMER_ID) if b.kind in kinds]
    entries = union_all(*(b.subquery().select() for b in branches)).subquery("entries")
    return CompiledQuery(
        select(entries.c.kind, entries.c.id, entries.c.at)
        .order_by(entries.c.at.desc(), entries.c.kind.desc(), entries.c.id.desc())
        .limit(_LIMIT)
    )


_IDS = bindparam("ids", type_=ARRAY(Uuid))
_INTERACTION_ENTRIES = CompiledQuery(
    select(
        Interaction.id,
        Interaction.type,
        Interaction.channel,
        Interaction.touchpoint,
        Interaction.summary,
        Interaction.amount,
        Interaction.currency,
    ).where(Interaction.id == any_(_IDS))
)
_STAGE_CHANGES = CompiledQuery(
    select(*row_columns(DealStageChange), Deal.title.label("deal_title"))
    .join(Deal, Deal.id == DealStageChange.deal_id)
    .where(DealStageChange.id == any_(_IDS))
)
_FIELD_CHANGES = CompiledQuery(select(*row_columns(CustomerChange)).where(CustomerChange.id == any_(_IDS)))
_TASKS = CompiledQuery(select(*row_columns(Task)).where(Task.id == any_(_IDS)))
_DOCUMENTS = CompiledQuery(select(*row_columns(Document)).where(Document.id == any_(_IDS)))
_EXPERIENCE_EVENTS = CompiledQuery(select(*row_columns(ExperienceEvent)).where(ExperienceEvent.id == any_(_IDS)))
_FOLLOWUP_TASKS = CompiledQuery(
    select(*row_columns(Task)).where(
        Task.origin == FOLLOWUP_ORIGIN, Task.origin_ref == any_(bindparam("refs", type_=ARRAY(String)))
    )
)


class TimelineRepository:
    """The timeline's statements, compiled once, on one connection of the asyncpg pool; the
    detail rows read like the ORM objects (`Row`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def page(self, customer_id: uuid.UUID, kinds: list[str], before: Cursor | None, limit: int) -> list[Cursor]:
        """Newest first, keyset on (at, kind, id); one row more than asked. Each kind gives
        at most that many of its own newest entries (an index range scan), and only those are
        merged: a page costs the same at any depth and however long the history."""
        query = page_query(tuple(sorted(kinds)), before[1] if before else None)
        params: dict[str, Any] = {"customer_id": customer_id, "limit": limit + 1}
        if before is not None:
            params["at"] = before[0]
            if before[1] in kinds:  # the id breaks ties only within the cursor's own kind
                params["entry_id"] = before[2]
        return [(r["at"], r["kind"], r["id"]) for r in await query.fetch(self.conn, **params)]

    async def _by_id(self, query: CompiledQuery, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
        return {r["id"]: Row(r) for r in await query.fetch(self.conn, ids=ids)} if ids else {}

    async def interactions(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
        """The page's interactions, as the plain rows the entries are made of."""
        return {r["id"]: r for r in await _INTERACTION_ENTRIES.fetch(self.conn, ids=ids)} if ids else {}

    async def stage_changes(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
        """Each with its deal's title (`deal_title`)."""
        return await self._by_id(_STAGE_CHANGES, ids)

    async def field_changes(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
        """The page's changes of the customer's fields (its history's entries)."""
        return await self._by_id(_FIELD_CHANGES, ids)

    async def tasks(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
        return await self._by_id(_TASKS, ids)

    async def documents(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
        return await self._by_id(_DOCUMENTS, ids)

    async def experience(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
        return await self._by_id(_EXPERIENCE_EVENTS, ids)

    async def followup_tasks(self, followup_ids: list[uuid.UUID]) -> dict[str, Row]:
        """origin_ref -> the task made for that follow-up."""
        if not followup_ids:
            return {}
        rows = await _FOLLOWUP_TASKS.fetch(self.conn, refs=[str(f) for f in followup_ids])
        return {r["origin_ref"]: Row(r) for r in rows}


_STATS = Nested(stats_query(_CUSTOMER_ID), "stats", one=True)
_OPEN_DEALS = Nested(open_deals_query(_CUSTOMER_ID, OPEN_DEALS_SHOWN), "open_deals")
_OPEN_TASKS = Nested(open_for_customer_query(_CUSTOMER_ID, OPEN_TASKS_SHOWN), "open_tasks")
_EXPERIENCE_TOTALS = Nested(totals_query(_CUSTOMER_ID), "experience", one=True)
_EXPERIENCE_LATEST = Nested(select(ExperienceEvent.__table__).where(latest_condition(_CUSTOMER_ID)), "latest")
# Everything the view shows besides the record in one statement (one round trip instead of six):
# each part a nested column, still its own index scan, in its own order.
_VIEW_ROWS = CompiledQuery(
    select(
        _STATS.column,
        _OPEN_DEALS.column,
        open_value_query(_CUSTOMER_ID).scalar_subquery().label("open_value"),
        _OPEN_TASKS.column,
        _EXPERIENCE_TOTALS.column,
        _EXPERIENCE_LATEST.column,
    )
)


Values = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ViewRows:
    """What the joined view shows besides the record, as plain rows (column -> value)."""

    stats: InteractionStats
    open_deals: list[Values]
    open_value: Decimal
    open_tasks: list[Values]
    experience: ExperienceTotals
    latest: dict[str, Row]


async def read_view_rows(conn: asyncpg.Connection, customer_id: uuid.UUID) -> ViewRows:
    """The view's queries (the same statements the domain repositories run through the ORM) as
    one statement on an asyncpg connection, compiled once."""
    record = await _VIEW_ROWS.fetchrow(conn, customer_id=customer_id)
    assert record is not None  # a SELECT without FROM: always one row
    # Read by position: stats_of and totals_of unpack the statements' columns in order.
    totals = record[_EXPERIENCE_TOTALS.name]
    assert totals is not None  # an aggregate: always one row
    return ViewRows(
        stats=stats_of(record[_STATS.name]),
        open_deals=_OPEN_DEALS.rows(record),
        open_value=as_money(record["open_value"]),
        open_tasks=_OPEN_TASKS.rows(record),
        experience=totals_of(totals),
        latest=latest_by_key(Row(r) for r in _EXPERIENCE_LATEST.rows(record)),
    )
