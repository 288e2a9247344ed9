"""The sales funnel: where open deals are, what they are worth, how deals convert from
stage to stage, how long they stay, and how many close won."""

from __future__ import annotations

import bisect
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from crm.funnel.repository import FunnelRepository, FunnelScope
from crm.funnel.schemas import ClosedTotals, Forecast, ForecastPeriod, Funnel, FunnelStage, OpenTotals
from crm.pipelines.models import Pipeline, PipelineStage
from cxkit.db import utcnow

CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


async def build_funnel(session: AsyncSession, pipeline: Pipeline, stages: list[PipelineStage], scope: FunnelScope) -> Funnel:
    repo = FunnelRepository(session)
    open_stages = [s for s in stages if not s.is_won and not s.is_lost]
    won_stage = next(s for s in stages if s.is_won)
    ranks = {s.id: i for i, s in enumerate(open_stages)} | {won_stage.id: len(open_stages)}

    open_by_stage: dict[object, tuple[int, Decimal]] = {}
    closed = {"won": (0, Decimal(0)), "lost": (0, Decimal(0))}
    for stage_id, status, count, amount in await repo.totals_by_stage_and_status(scope):
        if status == "open":
            prev = open_by_stage.get(stage_id, (0, Decimal(0)))
            open_by_stage[stage_id] = (prev[0] + count, prev[1] + amount)
        else:
            prev = closed[status]
            closed[status] = (prev[0] + count, prev[1] + amount)

    furthest = await repo.furthest_reached(scope, ranks)
    # reached[r]: deals whose furthest rank is r or beyond (a cumulative sum over <= 31 ranks).
    reached = [sum(n for r, n in furthest.items() if r >= rank) for rank in range(len(open_stages) + 1)]
    days = await repo.average_days_in_stage(scope, [s.id for s in open_stages])

    rows: list[FunnelStage] = []
    for rank, stage in enumerate(open_stages):
        count, amount = open_by_stage.get(stage.id, (0, Decimal(0)))
        here, onward = reached[rank], reached[rank + 1]
        rows.append(
            FunnelStage(
                stage_id=stage.id,
                name=stage.name,
                position=stage.position,
                probability=stage.probability,
                open_count=count,
                amount=_money(amount),
                weighted_amount=_money(amount * stage.probability),
                reached=here,
                conversion_to_next=round(onward / here, 4) if here else None,
                avg_days_in_stage=round(days[stage.id], 2) if stage.id in days else None,
            )
        )
    won_n, won_amount = closed["won"]
    lost_n, lost_amount = closed["lost"]
    return Funnel(
        pipeline_id=pipeline.id,
        pipeline_name=pipeline.name,
        stages=rows,
        open=OpenTotals(
            count=sum(r.open_count for r in rows),
            amount=_money(sum((r.amount for r in rows), Decimal(0))),
            weighted_amount=_money(sum((r.weighted_amount for r in rows), Decimal(0))),
        ),
        won=ClosedTotals(count=won_n, amount=_money(won_amount)),
        lost=ClosedTotals(count=lost_n, amount=_money(lost_amount)),
        win_rate=round(won_n / (won_n + lost_n), 4) if won_n + lost_n else None,
        generated_at=utcnow(),
    )


# --- the forecast ----------------------------------------------------------------------------


def period_start(day: dt.date, interval: str) -> dt.date:
    """The first day of the period holding `day` (weeks start on Monday)."""
    if interval == "week":
        return day - dt.timedelta(days=day.weekday())
    if interval == "quarter":
        return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return day.replace(day=1)


def next_period(start: dt.date, interval: str) -> dt.date:
    if interval == "week":
        return start + dt.timedelta(days=7)
    months = start.month - 1 + (3 if interval == "quarter" else 1)
    return dt.date(start.year + months // 12, months % 12 + 1, 1)


class _Sums:
    """Deals summed up: count, amount and (for open deals) amount x their stage's probability."""

    def __init__(self) -> None:
        self.count, self.amount, self.weighted = 0, Decimal(0), Decimal(0)

    def add(self, count: int, amount: Decimal, probability: Decimal) -> None:
        self.count += count
        self.amount += amount
        self.weighted += amount * probability

    def totals(self) -> OpenTotals:
        return OpenTotals(count=self.count, amount=_money(self.amount), weighted_amount=_money(self.weighted))

    def closed(self) -> ClosedTotals:
        return ClosedTotals(count=self.count, amount=_money(self.amount))


async def build_forecast(
    session: AsyncSession,
    pipeline: Pipeline,
    stages: list[PipelineStage],
    scope: FunnelScope,
    *,
    interval: str,
    since: dt.date | None,
    periods: int,
) -> Forecast:
    """Per period from the one holding `since` (default: today, UTC): the open deals expected to
    close in it, weighted by their stage's probability, and the deals won and lost in it; then
    the open deals overdue and those without a date."""
    today = utcnow().date()
    starts = [period_start(since or today, interval)]
    for _ in range(periods):
        starts.append(next_period(starts[-1], interval))
    probability = {s.id: s.probability for s in stages}
    repo = FunnelRepository(session)

    expected = [_Sums() for _ in range(periods)]
    overdue, undated = _Sums(), _Sums()
    for part, day, stage_id, count, amount in await repo.open_by_close_date(scope, starts[0], starts[-1], today):
        sums = undated if part == "undated" else overdue if part == "overdue" else expected[_index(starts, day)]
        sums.add(count, amount, probability.get(stage_id, Decimal(0)))
    closed = [{"won": _Sums(), "lost": _Sums()} for _ in range(periods)]
    for day, status, count, amount in await repo.closed_by_day(scope, starts[0], starts[-1]):
        closed[_index(starts, day)][status].add(count, amount, Decimal(0))

    return Forecast(
        pipeline_id=pipeline.id,
        pipeline_name=pipeline.name,
        interval=interval,  # type: ignore[arg-type]
        owner=scope.owner,
        currency=scope.currency,
        as_of=today,
        periods=[
            ForecastPeriod(
                start=starts[i],
                end=starts[i + 1],
                expected=expected[i].totals(),
                won=closed[i]["won"].closed(),
                lost=closed[i]["lost"].closed(),
            )
            for i in range(periods)
        ],
        overdue=overdue.totals(),
        undated=undated.totals(),
    )


def _index(starts: list[dt.date], day: dt.date | None) -> int:
    """Which period (of those starting at `starts`, the last entry being the end) holds `day`."""
    assert day is not None
    return bisect.bisect_right(starts, day) - 1
