"""The funnel's aggregate queries: every figure is computed by the database."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select

from crm.deals.models import Deal, DealStageChange
from cxkit.repository import SessionRepository


@dataclass(frozen=True, slots=True)
class FunnelScope:
    """Which deals count: those now in the pipeline, optionally by owner, currency and
    creation time (`created_from` inclusive, `created_to` exclusive)."""

    pipeline_id: uuid.UUID
    owner: str | None = None
    currency: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = [Deal.pipeline_id == self.pipeline_id]
        if self.owner is not None:
            found.append(Deal.owner == self.owner)
        if self.currency is not None:
            found.append(Deal.currency == self.currency)
        if self.created_from is not None:
            found.append(Deal.created_at >= self.created_from)
        if self.created_to is not None:
            found.append(Deal.created_at < self.created_to)
        return found


class FunnelRepository(SessionRepository):
    async def totals_by_stage_and_status(self, scope: FunnelScope) -> list[tuple[uuid.UUID, str, int, Decimal]]:
        """(stage id, status, count, sum of amounts) of the deals in scope."""
        stmt = (
            select(Deal.stage_id, Deal.status, func.count(), func.coalesce(func.sum(Deal.amount), 0))
            .where(*scope.conditions())
            .group_by(Deal.stage_id, Deal.status)
        )
        return [(sid, status, int(n), Decimal(total)) for sid, status, n, total in await self.session.execute(stmt)]

    async def furthest_reached(self, scope: FunnelScope, ranks: dict[uuid.UUID, int]) -> dict[int, int]:
        """rank -> number of deals whose furthest stage (by rank) in this pipeline was that one.
        `ranks` gives the open stages 0..n-1 and the won stage n; the lost stage has none."""
        if not ranks:
            return {}
        rank = case(ranks, value=DealStageChange.to_stage_id)
        per_deal = (
            select(func.max(rank).label("furthest"))
            .select_from(DealStageChange)
            .join(Deal, Deal.id == DealStageChange.deal_id)
            .where(
                *scope.conditions(),
                DealStageChange.pipeline_id == scope.pipeline_id,
                DealStageChange.to_stage_id.in_(list(ranks)),
            )
            .group_by(DealStageChange.deal_id)
            .subquery()
        )
        stmt = select(per_deal.c.furthest, func.count()).group_by(per_deal.c.furthest)
        return {int(r): int(n) for r, n in await self.session.execute(stmt)}

    async def average_days_in_stage(self, scope: FunnelScope, stage_ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
        """stage id -> mean days between entering the stage and the next move, over the stays
        that ended. The next move is found over the deal's whole history (LEAD by seq)."""
        if not stage_ids:
            return {}
        stays: Select[Any] = (
            select(
                DealStageChange.to_stage_id.label("stage_id"),
                DealStageChange.pipeline_id.label("pipeline_id"),
                DealStageChange.changed_at.label("entered"),
                func.lead(DealStageChange.changed_at)
                .over(partition_by=DealStageChange.deal_id, order_by=DealStageChange.seq)
                .label("left"),
            )
            .join(Deal, Deal.id == DealStageChange.deal_id)
            .where(*scope.conditions())
        )
        sub = stays.subquery()
        stmt = (
            select(sub.c.stage_id, func.avg(func.extract("epoch", sub.c.left - sub.c.entered) / 86400.0))
            .where(sub.c.left.is_not(None), sub.c.pipeline_id == scope.pipeline_id, sub.c.stage_id.in_(stage_ids))
            .group_by(sub.c.stage_id)
        )
        return {sid: float(days) for sid, days in await self.session.execute(stmt) if days is not None}

    async def open_by_close_date(
        self, scope: FunnelScope, start: dt.date, end: dt.date, today: dt.date
    ) -> list[tuple[str, dt.date | None, uuid.UUID, int, Decimal]]:
        """The open deals in scope as (`window` | `overdue` | `undated`, expected close date,
        stage id, count, sum of amounts): expected to close from `start` (inclusive) to `end`
        (exclusive); or before `today`; or with no date. A deal in a past part of the window is
        both `window` and `overdue` (one row each)."""
        open_ = [*scope.conditions(), Deal.status == "open"]
        date = Deal.expected_close_date
        parts = [
            ("window", [date >= start, date < end]),
            ("overdue", [date < today]),
            ("undated", [date.is_(None)]),
        ]
        found: list[tuple[str, dt.date | None, uuid.UUID, int, Decimal]] = []
        for part, conditions in parts:
            stmt = (
                select(date, Deal.stage_id, func.count(), func.coalesce(func.sum(Deal.amount), 0))
                .where(*open_, *conditions)
                .group_by(date, Deal.stage_id)
            )
            found += [(part, day, stage_id, int(n), amount) for day, stage_id, n, amount in await self.session.execute(stmt)]
        return found

    async def closed_by_day(self, scope: FunnelScope, start: dt.date, end: dt.date) -> list[tuple[dt.date, str, int, Decimal]]:
        """(UTC day closed, won | lost, count, sum of amounts) of the deals in scope closed from
        `start` (inclusive) to `end` (exclusive)."""
        day = func.date(func.timezone("UTC", Deal.closed_at))
        midnight = dt.time(tzinfo=dt.UTC)
        stmt = (
            select(day, Deal.status, func.count(), func.coalesce(func.sum(Deal.amount), 0))
            .where(
                *scope.conditions(),
                Deal.status.in_(("won", "lost")),
                Deal.closed_at >= dt.datetime.combine(start, midnight),
                Deal.closed_at < dt.datetime.combine(end, midnight),
            )
            .group_by(day, Deal.status)
        )
        return [(d, status, int(n), amount) for d, status, n, amount in await self.session.execute(stmt)]
