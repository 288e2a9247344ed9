"""The sales funnel: where open deals are, what they are worth, how deals convert from
stage to stage, how long they stay, and how many close won."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from crm.funnel.repository import FunnelRepository, FunnelScope
from crm.funnel.schemas import ClosedTotals, Funnel, FunnelStage, OpenTotals
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
