"""Every lead query."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, or_, select, update

from crm.customers.lifecycle import CustomerErasure
from crm.leads.models import Lead
from cxkit import keyset
from cxkit.db import next_version
from cxkit.http.pagination import PageParams
from cxkit.http.params import ANY_TIME, ChangedWindow
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


class LeadRepository(Repository[Lead]):
    model = Lead

    def _filtered(self, filters: LeadFilters) -> Select[Any]:
        stmt = select(Lead)
        if filters.q:
            pattern = _like(filters.q)
            stmt = stmt.where(
                or_(
                    Lead.name.ilike(pattern, escape="\\"),
                    Lead.email_normalized.like(pattern.lower(), escape="\\"),
                    Lead.company.ilike(pattern, escape="\\"),
                )
            )
        if filters.status:
            stmt = stmt.where(Lead.status == filters.status)
        if filters.owner:
            stmt = stmt.where(Lead.owner == filters.owner)
        if filters.campaign_id:
            stmt = stmt.where(Lead.campaign_id == filters.campaign_id)
        if filters.converted is not None:
            stmt = stmt.where(Lead.converted_at.is_not(None) if filters.converted else Lead.converted_at.is_(None))
        return stmt.where(*filters.changed.conditions(Lead.updated_at))

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
