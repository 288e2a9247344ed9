"""Every lead query."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, or_, select, update

from crm.customers.lifecycle import CustomerErasure
from crm.leads.models import Lead
from cxkit import keyset
from cxkit.db import next_version
from cxkit.http.pagination import PageParams
from cxkit.http.params import ANY_TIME, ChangedWindow
from cxkit.pg_pool import CompiledQuery
from cxkit.repository import Repository

SORT_KEYS = (
    keyset.SortKey("created_at", Lead.created_at, "datetime"),
    keyset.SortKey("score", Lead.score, "int"),
    keyset.SortKey("updated_at", Lead.updated_at, "datetime"),
)


@dataclass(frozen=True, slots=True)
class LeadFilters:
    q: str | None = None
    status: str | None = None
    owner: str | None = None
    campaign_id: uuid.UUID | None = None
    converted: bool | None = None
    changed: ChangedWindow = ANY_TIME


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def matching(filters: LeadFilters) -> list[Any]:
    """The WHERE of the leads a list (or an export) with these filters shows."""
    conditions: list[Any] = []
    if filters.q:
        pattern = _like(filters.q)
        conditions.append(
            or_(
                Lead.name.ilike(pattern, escape="\\"),
                Lead.email_normalized.like(pattern.lower(), escape="\\"),
                Lead.company.ilike(pattern, escape="\\"),
            )
        )
    for column, value in ((Lead.status, filters.status), (Lead.owner, filters.owner), (Lead.campaign_id, filters.campaign_id)):
        if value:
            conditions.append(column == value)
    if filters.converted is not None:
        conditions.append(Lead.converted_at.is_not(None) if filters.converted else Lead.converted_at.is_(None))
    return conditions + filters.changed.conditions(Lead.updated_at)


def export_query(filters: LeadFilters, sort: keyset.Sort, columns: Sequence[str]) -> CompiledQuery:
    """Every lead the list shows with these filters, in its order, unpaged: `columns` of each,
    for a CSV export through a cursor on the pool."""
    stmt = select(*(Lead.__table__.c[name] for name in columns)).where(*matching(filters))
    return CompiledQuery(keyset.ordered(stmt, sort, Lead.id))


class LeadRepository(Repository[Lead]):
    model = Lead

    def _filtered(self, filters: LeadFilters) -> Select[Any]:
        return select(Lead).where(*matching(filters))

    async def list_page(self, filters: LeadFilters, sort: keyset.Sort, page: PageParams) -> list[Lead]:
        stmt = keyset.apply(self._filtered(filters), sort, Lead.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        """The leads that became the duplicate became the survivor."""
        await self.session.execute(
            update(Lead)
            .where(Lead.converted_customer_id == duplicate_id)
            .values(converted_customer_id=survivor_id, **next_version(Lead))
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """The personal fields of the leads that became this customer."""
        await self.session.execute(
            update(Lead)
            .where(Lead.converted_customer_id == erasure.customer_id)
            .values(
                email=None,
                email_normalized=None,
                name=None,
                company=None,
                phone=None,
                job_title=None,
                notes=None,
                **next_version(Lead),
            )
        )
