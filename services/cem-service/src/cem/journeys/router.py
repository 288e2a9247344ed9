"""/v1/journeys"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cem.journeys import service
from cem.journeys.models import Journey
from cem.journeys.schemas import JourneyCreate, JourneyRead, JourneyUpdate
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

router = GatedRouter(prefix="/journeys", tags=["journeys"], route_class=TypedRoute)
JourneyId = Annotated[uuid.UUID, id_path("journey", "8a1e3c52-6b0f-4d7e-9f2a-1c3b5d7e9f01")]


async def _one(session: AsyncSession, journey: Journey, status: int = 200) -> ModelResponse[JourneyRead]:
    (read,) = await service.read_journeys(session, [journey])
    headers = {"ETag": etag_for(read.version)}
    if status == 201:
        headers["Location"] = f"/v1/journeys/{read.id}"
    return json_response(read, status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Create a journey",
    description="A customer journey: named stages in order, each listing its touchpoints (by key or id) in "
    "the order customers meet them. A reference that reads as a UUID is looked up as an id and as a key (a key "
    "may look like one); the touchpoint with that id wins. A touchpoint appears once per journey; an unknown one "
    "is a 422, and one deleted while the journey is written a 409. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_journey(body: JourneyCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[JourneyRead]:
    async def operation() -> ModelResponse[JourneyRead]:
        return await _one(session, await service.create_journey(session, body), 201)

    return await idem.execute(session, operation)


@router.get(
    "",
    summary="List journeys",
    description="Ordered by name, each with its stages and touchpoints; paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_journeys(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    name: Annotated[QueryText | None, Query(max_length=200, description="Only journeys with this exact name.")] = None,
) -> ModelResponse[Page[JourneyRead]]:
    rows, next_cursor = await service.list_journeys(session, page, name=name)
    return json_response(Page[JourneyRead](items=rows, next_cursor=next_cursor))


@router.get(
    "/{journey_id}",
    summary="Get a journey",
    description="One journey with its stages and their touchpoints in order, and its `ETag` (a change of a "
    f"touchpoint it shows gives it a new one too). {NOT_MODIFIED_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_journey(
    journey_id: JourneyId, request: Request, session: SessionDep, _: Reader
) -> ModelResponse[JourneyRead] | Response:
    journey = await service.get_journey(session, journey_id)
    return unchanged(request, journey.version) or await _one(session, journey)


@router.patch(
    "/{journey_id}",
    summary="Update a journey",
    description="Changes the fields sent. `stages`, when sent, replaces all stages in the order given: send the "
    "stages (and their touchpoints) in their new order to reorder them. Honours `If-Match` (412 if stale). Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_journey(
    journey_id: JourneyId, body: JourneyUpdate, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
) -> ModelResponse[JourneyRead]:
    async def operation() -> ModelResponse[JourneyRead]:
        return await _one(session, await service.update_journey(session, journey_id, body, if_match))

    return await idem.execute(session, operation)


@router.delete(
    "/{journey_id}",
    status_code=204,
    summary="Delete a journey",
    description="Deletes the journey and its stages; the touchpoints themselves stay. Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def delete_journey(journey_id: JourneyId, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None) -> Response:
    async def operation() -> Response:
        await service.delete_journey(session, journey_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)
