"""/v1/touchpoints"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from cem.touchpoints import service
from cem.touchpoints.schemas import TouchpointCreate, TouchpointRead, TouchpointUpdate
from cxkit.fields import QueryText
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.etag import IF_NONE_MATCH_PARAMETER, NOT_MODIFIED_RESPONSE, NOT_MODIFIED_TEXT, etag_for, unchanged
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.params import IfMatch, id_path
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/touchpoints", tags=["touchpoints"], route_class=TypedRoute)
TouchpointId = Annotated[uuid.UUID, id_path("touchpoint", "5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c")]


def _one(touchpoint: object, status: int = 200) -> ModelResponse[TouchpointRead]:
    read = TouchpointRead.model_validate(touchpoint)
    headers = {"ETag": etag_for(read.version)}
    if status == 201:
        headers["Location"] = f"/v1/touchpoints/{read.id}"
    return json_response(read, status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Create a touchpoint",
    description="A moment where customers meet the company, keyed by a unique slug (409 if taken), "
    "optionally with a target score: the brand promise. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_touchpoint(body: TouchpointCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[TouchpointRead]:
    async def operation() -> ModelResponse[TouchpointRead]:
        return _one(await service.create_touchpoint(session, body), 201)

    return await idem.execute(session, operation)


@router.get(
    "",
    summary="List touchpoints",
    description="Ordered by key, paginated with `limit` and `cursor`; filter by `channel` or `journey_stage`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_touchpoints(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    channel: Annotated[QueryText | None, Query(max_length=50, description="Only this channel.", examples=["web"])] = None,
    journey_stage: Annotated[
        QueryText | None, Query(max_length=50, description="Only this journey stage.", examples=["purchase"])
    ] = None,
) -> ModelResponse[Page[TouchpointRead]]:
    rows, next_cursor = await service.list_touchpoints(session, page, channel=channel, journey_stage=journey_stage)
    return json_response(Page[TouchpointRead](items=[TouchpointRead.model_validate(r) for r in rows], next_cursor=next_cursor))


@router.get(
    "/{touchpoint_id}",
    summary="Get a touchpoint",
    description=f"One touchpoint by id, with its `ETag`. {NOT_MODIFIED_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_touchpoint(
    touchpoint_id: TouchpointId, request: Request, session: SessionDep, _: Reader
) -> ModelResponse[TouchpointRead] | Response:
    touchpoint = await service.get_touchpoint(session, touchpoint_id)
    return unchanged(request, touchpoint.version) or _one(touchpoint)


@router.patch(
    "/{touchpoint_id}",
    summary="Update a touchpoint",
    description="Changes the fields sent (null clears an optional one); the key cannot change. "
    "`target_metric` and `target_score` must stay together and in range. Send `If-Match` with the "
    "`ETag` you read to avoid overwriting someone else's change (412 if stale). Needs `write`.",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def update_touchpoint(
    touchpoint_id: TouchpointId, body: TouchpointUpdate, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
) -> ModelResponse[TouchpointRead]:
    async def operation() -> ModelResponse[TouchpointRead]:
        return _one(await service.update_touchpoint(session, touchpoint_id, body, if_match))

    return await idem.execute(session, operation)


@router.delete(
    "/{touchpoint_id}",
    status_code=204,
    summary="Delete a touchpoint",
    description="Deletes a touchpoint no journey or survey uses (409 names those that do). Answers, "
    "invitations and feedback keep its key. Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def delete_touchpoint(
    touchpoint_id: TouchpointId, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
) -> Response:
    async def operation() -> Response:
        await service.delete_touchpoint(session, touchpoint_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)
