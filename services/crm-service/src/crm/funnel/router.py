"""/v1/funnel"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from crm.fields import Currency
from crm.funnel.repository import FunnelScope
from crm.funnel.schemas import Funnel
from crm.funnel.service import build_funnel
from crm.pipelines.service import get_pipeline, resolve_pipeline
from cxkit.fields import QueryText, Timestamp
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.problems import field_problem, problem_responses
from cxkit.http.routing import GatedRouter

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
    if pipeline_id is None:
        pipeline, stages = await resolve_pipeline(session, None)
        await session.commit()  # the built-in default pipeline may just have been created
    else:
        pipeline, stages = await get_pipeline(session, pipeline_id)
    scope = FunnelScope(pipeline.id, owner=owner, currency=currency, created_from=created_from, created_to=created_to)
    return json_response(await build_funnel(session, pipeline, stages, scope))
