"""Every deal and stage-history query."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select, update

from crm.customers.lifecycle import CustomerErasure
from crm.db import as_money
from crm.deals.models import Deal, DealStageChange
from crm.pipelines.models import PipelineStage
from cxkit import keyset
from cxkit.db import next_version
from cxkit.http.pagination import PageParams
from cxkit.http.params import ANY_TIME, ChangedWindow
from cxkit.pg_pool import CompiledQuery
from cxkit.repository import Repository

ERASED_TITLE = "[erased]"
SORT_KEYS = (
    keyset.SortKey("created_at", Deal.created_at, "datetime"),
    keyset.SortKey("amount", Deal.amount, "decimal", nullable=True),
    keyset.SortKey("expected_close_date", Deal.expected_close_date, "date", nullable=True),
    keyset.SortKey("updated_at", Deal.updated_at, "datetime"),
)
# A deal's history in the order it was made: `seq` counts a deal's changes, so needs no id.
HISTORY_ORDER = keyset.Sort(keyset.SortKey("seq", DealStageChange.seq, "int", unique=True), descending=False)


@dataclass(frozen=True, slots=True)
class DealFilters:
    customer_id: uuid.UUID | None = None
    pipeline_id: uuid.UUID | None = None
    stage_id: uuid.UUID | None = None
    status: str | None = None
    owner: str | None = None
    changed: ChangedWindow = ANY_TIME


def matching(filters: DealFilters) -> list[Any]:
    """The WHERE of the deals a list (or an export) with these filters shows."""
    conditions = [
        column == value
        for column, value in (
            (Deal.customer_id, filters.customer_id),
            (Deal.pipeline_id, filters.pipeline_id),
            (Deal.stage_id, filters.stage_id),
            (Deal.status, filters.status),
            (Deal.owner, filters.owner),
        )
        if value is not None
    ]
    return conditions + filters.changed.conditions(Deal.updated_at)


def export_query(filters: DealFilters, sort: keyset.Sort, columns: Sequence[str]) -> CompiledQuery:
    """Every deal the list shows with these filters, in its order, unpaged: `columns` of each
    (a deal's own, or `stage` and `probability` of its stage), for a CSV export through a
    cursor on the pool."""
    of_stage = {"stage": PipelineStage.name.label("stage"), "probability": PipelineStage.probability.label("probability")}
    stmt = (
        select(*(of_stage[name] if name in of_stage else Deal.__table__.c[name] for name in columns))
        .select_from(Deal)
        .join(PipelineStage, PipelineStage.id == Deal.stage_id)
        .where(*matching(filters))
    )
    return CompiledQuery(keyset.ordered(stmt, sort, Deal.id))


def open_value_query(customer_id: Any) -> Select[Any]:
    """The sum of a customer's open deal amounts (a value or a `bindparam`)."""
    return select(func.coalesce(func.sum(Deal.amount), 0)).where(Deal.customer_id == customer_id, Deal.status == "open")


def open_deals_query(customer_id: Any, limit: int) -> Select[Any]:
    """A customer's open deals as flat rows: the deal's columns, `stage` and `probability`
    (the shape `DealRead` reads), soonest expected close first."""
    return (
        select(Deal.__table__, PipelineStage.name.label("stage"), PipelineStage.probability)
        .join(PipelineStage, PipelineStage.id == Deal.stage_id)
        .where(Deal.customer_id == customer_id, Deal.status == "open")
        .order_by(Deal.expected_close_date.asc().nulls_last(), Deal.created_at)
        .limit(limit)
    )


class DealRepository(Repository[Deal]):
    model = Deal

    async def get_with_stage(self, deal_id: uuid.UUID) -> tuple[Deal, PipelineStage] | None:
        row = (
            await self.session.execute(
                select(Deal, PipelineStage).join(PipelineStage, PipelineStage.id == Deal.stage_id).where(Deal.id == deal_id)
            )
        ).first()
        return (row[0], row[1]) if row else None

    def _filtered(self, filters: DealFilters) -> Select[Any]:
        return select(Deal, PipelineStage).join(PipelineStage, PipelineStage.id == Deal.stage_id).where(*matching(filters))

    async def list_page(self, filters: DealFilters, sort: keyset.Sort, page: PageParams) -> list[tuple[Deal, PipelineStage]]:
        return [(d, s) for d, s in await keyset.fetch(self.rows_of, self._filtered(filters), sort, Deal.id, page)]

    async def open_deals(self, customer_id: uuid.UUID, limit: int) -> list[tuple[Deal, PipelineStage]]:
        stmt = (
            self._filtered(DealFilters(customer_id=customer_id, status="open"))
            .order_by(Deal.expected_close_date.asc().nulls_last(), Deal.created_at)
            .limit(limit)
        )
        return [(d, s) for d, s in (await self.session.execute(stmt)).all()]

    async def open_value(self, customer_id: uuid.UUID) -> Decimal:
        """The customer's current sum of open deal amounts."""
        return as_money(await self.session.scalar(open_value_query(customer_id)))

    async def customer_id_of(self, deal_id: uuid.UUID) -> uuid.UUID | None:
        """The id of the deal's customer as committed now (a statement of its own, never the
        session's copy: a merge may have moved the deal since it was loaded), or None."""
        return await self.session.scalar(select(Deal.customer_id).where(Deal.id == deal_id))

    async def next_seq(self, deal_id: uuid.UUID) -> int:
        last = await self.session.scalar(select(func.max(DealStageChange.seq)).where(DealStageChange.deal_id == deal_id))
        return int(last or 0) + 1

    async def history_page(self, deal_id: uuid.UUID, page: PageParams) -> list[DealStageChange]:
        stmt = select(DealStageChange).where(DealStageChange.deal_id == deal_id)
        return list((await self.session.scalars(keyset.apply(stmt, HISTORY_ORDER, DealStageChange.id, page))).all())

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Deal).where(Deal.customer_id == duplicate_id).values(customer_id=survivor_id, **next_version(Deal))
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """Free text goes (a title or lost reason may name the person); amounts, stages,
        dates and history stay for the funnel."""
        await self.session.execute(
            update(Deal)
            .where(Deal.customer_id == erasure.customer_id)
            .values(title=ERASED_TITLE, lost_reason=None, **next_version(Deal))
        )
