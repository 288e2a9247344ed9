"""Every task query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, update

from crm.customers.lifecycle import CustomerErasure
from crm.tasks.models import Task
from cxkit import keyset
from cxkit.db import equal_to_given, next_version
from cxkit.http.pagination import PageParams
from cxkit.http.params import ANY_TIME, ChangedWindow
from cxkit.pg_pool import CompiledQuery
from cxkit.repository import Repository

SORT_KEYS = (
    keyset.SortKey("due_at", Task.due_at, "datetime", nullable=True),
    keyset.SortKey("created_at", Task.created_at, "datetime"),
    keyset.SortKey("updated_at", Task.updated_at, "datetime"),
)
ERASED_TITLE = "[erased]"


@dataclass(frozen=True, slots=True)
class TaskFilters:
    customer_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None
    owner: str | None = None
    status: str | None = None
    origin: str | None = None
    origin_ref: str | None = None
    due_before: dt.datetime | None = None
    changed: ChangedWindow = ANY_TIME


def open_for_customer_query(customer_id: Any, limit: int) -> Select[Any]:
    """A customer's open tasks (a value or a `bindparam`), soonest due first."""
    return (
        select(Task.__table__)
        .where(Task.customer_id == customer_id, Task.status == "open")
        .order_by(Task.due_at.asc().nulls_last(), Task.created_at)
        .limit(limit)
    )


def matching(filters: TaskFilters) -> list[Any]:
    """The WHERE of the tasks a list (or an export) with these filters shows."""
    conditions: list[Any] = equal_to_given(
        (
            (Task.customer_id, filters.customer_id),
            (Task.deal_id, filters.deal_id),
            (Task.owner, filters.owner),
            (Task.status, filters.status),
            (Task.origin, filters.origin),
            (Task.origin_ref, filters.origin_ref),
        )
    )
    if filters.due_before is not None:
        conditions.append(Task.due_at < filters.due_before)
    return conditions + filters.changed.conditions(Task.updated_at)


def export_query(filters: TaskFilters, sort: keyset.Sort, columns: Sequence[str]) -> CompiledQuery:
    """Every task the list shows with these filters, in its order, unpaged: `columns` of each,
    for a CSV export through a cursor on the pool."""
    stmt = select(*(Task.__table__.c[name] for name in columns)).where(*matching(filters))
    return CompiledQuery(keyset.ordered(stmt, sort, Task.id))


class TaskRepository(Repository[Task]):
    model = Task

    async def list_page(self, filters: TaskFilters, sort: keyset.Sort, page: PageParams) -> list[Task]:
        return await keyset.fetch(self.scalars_of, select(Task).where(*matching(filters)), sort, Task.id, page)

    async def open_for_customer(self, customer_id: uuid.UUID, limit: int) -> list[Task]:
        stmt = select(Task).from_statement(open_for_customer_query(customer_id, limit))
        return list((await self.session.scalars(stmt)).all())

    async def claim_overdue(self, now: dt.datetime, limit: int) -> list[Task]:
        """Up to `limit` open tasks whose due time has passed and is not announced yet, oldest
        due first, locked; those another replica's pass holds are skipped (it announces them)."""
        stmt = (
            select(Task)
            .where(Task.status == "open", Task.due_at <= now, Task.overdue_announced_at.is_(None))
            .order_by(Task.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.scalars(stmt)).all())

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Task).where(Task.customer_id == duplicate_id).values(customer_id=survivor_id, **next_version(Task))
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """Free text goes; dates, status, owner and origin stay."""
        await self.session.execute(
            update(Task)
            .where(Task.customer_id == erasure.customer_id)
            .values(title=ERASED_TITLE, description=None, **next_version(Task))
        )
