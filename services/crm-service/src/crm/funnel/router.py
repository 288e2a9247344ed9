"""/v1/funnel"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import Query
from pydantic import Field, WithJsonSchema

from crm.fields import Currency
from crm.funnel.repository import FunnelScope
from crm.funnel.schemas import Forecast, ForecastInterval, Funnel
from crm.funnel.service import build_forecast, build_funnel
from crm.pipelines.models import Pipeline, PipelineStage
from crm.pipelines.service import get_pipeline, resolve_pipeline
from cxkit.fields import Day, QueryText, Timestamp
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.problems import field_problem, problem_responses
from cxkit.http.routing import GatedRouter

# A day the forecast may start from. The range is in the published schema as a pattern on the
# year (JSON Schema has no bounds for a date), so a client or a generator can see it.
ForecastDay = Annotated[
    Day,
    Field(ge=dt.date(1900, 1, 1), le=dt.date(2999, 12, 31)),
    WithJsonSchema({"type": "string", "format": "date", "pattern": r"^(19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}$"}),
]

router = GatedRouter(tags=["funnel"], route_class=TypedRoute)


@router.get(
    "/funnel",
    summary="Sales funnel of a pipeline",
    description="Per open stage: open deals now (count, amount, weighted amount = amount x probability), how many deals "
    "ever reached the stage or a later one, the conversion to the next stage (after the last open stage: to won), "
    "and the average days deals spent in the stage before moving on. Then won and lost totals and the win rate "
    "(won / (won + lost) by count). Scope: deals now in the pipeline (default: the default pipeline), optionally "
    "by `owner`, `currency` and creation time (`created_from` inclusive, `created_to` exclusive). Amounts are "
    "summed as stored: filter by `currency` when a pipeline mixes currencies. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def funnel(
    session: SessionDep,
    _: Reader,
    pipeline_id: Annotated[uuid.UUID | None, Query(description="Default: the default pipeline.")] = None,
    owner: Annotated[QueryText | None, Query(min_length=1, max_length=200)] = None,
    currency: Annotated[Currency | None, Query()] = None,
    created_from: Annotated[Timestamp | None, Query(description="RFC 3339, inclusive.")] = None,
    created_to: Annotated[Timestamp | None, Query(description="RFC 3339, exclusive.")] = None,
) -> ModelResponse[Funnel]:
    if created_from and created_to and created_from >= created_to:
        raise field_problem(["query", "created_to"], "created_from must be before created_to")
    pipeline, stages = await _pipeline(session, pipeline_id)
    scope = FunnelScope(pipeline.id, owner=owner, currency=currency, created_from=created_from, created_to=created_to)
    return json_response(await build_funnel(session, pipeline, stages, scope))


async def _pipeline(session: SessionDep, pipeline_id: uuid.UUID | None) -> tuple[Pipeline, list[PipelineStage]]:
    """The pipeline asked for, or the default one (made on first use)."""
    if pipeline_id is None:
        pipeline, stages = await resolve_pipeline(session, None)
        await session.commit()  # the built-in default pipeline may just have been created
        return pipeline, stages
    return await get_pipeline(session, pipeline_id)


@router.get(
    "/forecast",
    summary="Sales forecast by expected close date",
    description="Per `interval` (`week` from Monday, `month` or `quarter`; `periods` of them from the one holding "
    "`from`, default today, UTC): the open deals expected to close in it (by `expected_close_date`: count, amount "
    "and weighted amount = amount x the probability of the deal's stage) and the deals won and lost in it (by the "
    "UTC day of `closed_at`). Then `overdue`, the open deals whose expected close date has passed (those in past "
    "periods are also counted there), and `undated`, those without one. Scope: deals now in the pipeline (default: "
    "the default pipeline), optionally by `owner` and `currency`; amounts are summed as stored, so filter by "
    "`currency` when a pipeline mixes currencies. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def forecast(
    session: SessionDep,
    _: Reader,
    pipeline_id: Annotated[uuid.UUID | None, Query(description="Default: the default pipeline.")] = None,
    owner: Annotated[QueryText | None, Query(min_length=1, max_length=200)] = None,
    currency: Annotated[Currency | None, Query()] = None,
    interval: Annotated[ForecastInterval, Query(description="The length of a period.")] = "month",
    since: Annotated[
        ForecastDay | None,
        Query(
            alias="from",
            description="A day in the first period (default: today, UTC), from 1900-01-01 to 2999-12-31.",
            examples=["2026-12-01"],
        ),
    ] = None,
    periods: Annotated[int, Query(ge=1, le=36, description="How many periods.")] = 6,
) -> ModelResponse[Forecast]:
    pipeline, stages = await _pipeline(session, pipeline_id)
    scope = FunnelScope(pipeline.id, owner=owner, currency=currency)
    return json_response(await build_forecast(session, pipeline, stages, scope, interval=interval, since=since, periods=periods))
