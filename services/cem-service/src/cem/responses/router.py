"""/v1/responses"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from cem.fields import From, QueryText, To, id_path
from cem.responses import service
from cem.responses.schemas import ResponseCreate, ResponseRead
from cxkit.http.app import json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.problems import problem_responses

router = APIRouter(prefix="/responses", tags=["responses"])
ResponseId = Annotated[uuid.UUID, id_path("response", "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d")]


@router.post(
    "",
    status_code=201,
    response_model=ResponseRead,
    summary="Record an answer",
    description="For API clients (apps, kiosks, imports): answer an invitation by its `token`, or a survey by "
    "`survey_id` for a customer, an email or anonymously. The same rules as the respondent page: the survey must "
    "be active and an invitation is answered once (409 with `reason` already_answered, expired or survey_closed); "
    "answers are checked against the questions (422 names each bad one). Announces "
    "`survey.response.submitted`, and `followup.requested` when a known customer answers NPS 0-6, CSAT 1-2 or "
    "CES 1-2. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_response(body: ResponseCreate, session: SessionDep, idem: IdempotencyDep) -> Response:
    async def operation() -> Response:
        created = await service.submit_from_api(session, body)
        return json_response(created, 201, headers={"Location": f"/v1/responses/{created.id}"})

    return await idem.execute(session, operation)


@router.get(
    "",
    response_model=Page[ResponseRead],
    summary="List answers",
    description="Newest first; filter by `survey_id`, `customer_id`, `touchpoint` and a time window (`from` "
    "inclusive, `to` exclusive); paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_responses(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    since: From = None,
    until: To = None,
    survey_id: Annotated[uuid.UUID | None, Query(description="Only answers to this survey.")] = None,
    customer_id: Annotated[uuid.UUID | None, Query(description="Only this customer's answers.")] = None,
    touchpoint: Annotated[
        QueryText | None, Query(max_length=100, description="Only answers about this touchpoint (key).")
    ] = None,
) -> Response:
    rows, next_cursor = await service.list_responses(
        session, page, survey_id=survey_id, customer_id=customer_id, touchpoint=touchpoint, since=since, until=until
    )
    return json_response(Page[ResponseRead](items=rows, next_cursor=next_cursor))


@router.get(
    "/{response_id}",
    response_model=ResponseRead,
    summary="Get an answer",
    description="One response with every answer, its score (metric, scale, category) and whether a follow-up was requested. "
    "Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_response(response_id: ResponseId, session: SessionDep, _: Reader) -> Response:
    return json_response(await service.get_response(session, response_id))
