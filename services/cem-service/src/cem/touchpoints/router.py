"""/v1/touchpoints"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from cem.touchpoints import service
from cem.touchpoints.schemas import TouchpointCreate, TouchpointRead
from cxkit.http.app import json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.etag import etag_for
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.problems import problem_responses

router = APIRouter(prefix="/touchpoints", tags=["touchpoints"])


@router.post(
    "",
    status_code=201,
    response_model=TouchpointRead,
    summary="Create a touchpoint",
    description="A moment where customers meet the company, keyed by a unique slug (409 if taken), "
    "optionally with a target score: the brand promise. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_touchpoint(body: TouchpointCreate, session: SessionDep, idem: IdempotencyDep) -> Response:
    async def operation() -> Response:
        touchpoint = await service.create_touchpoint(session, body)
        return json_response(
            TouchpointRead.model_validate(touchpoint),
            201,
            headers={"ETag": etag_for(touchpoint.version), "Location": f"/v1/touchpoints/{touchpoint.id}"},
        )

    return await idem.execute(session, operation)


@router.get(
    "",
    response_model=Page[TouchpointRead],
    summary="List touchpoints",
    description="Ordered by key, paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_touchpoints(session: SessionDep, _: Reader, page: Annotated[PageParams, Depends(page_params)]) -> Response:
    rows, next_cursor = await service.list_touchpoints(session, page)
    return json_response(Page[TouchpointRead](items=[TouchpointRead.model_validate(r) for r in rows], next_cursor=next_cursor))
