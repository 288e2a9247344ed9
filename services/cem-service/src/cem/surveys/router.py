"""/v1/surveys"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from cem.surveys import service
from cem.surveys.models import Survey
from cem.surveys.schemas import Kind, Status, SurveyCreate, SurveyRead, SurveyUpdate
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

router = GatedRouter(prefix="/surveys", tags=["surveys"], route_class=TypedRoute)
SurveyId = Annotated[uuid.UUID, id_path("survey", "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c")]


def _one(survey: Survey, status: int = 200) -> ModelResponse[SurveyRead]:
    headers = {"ETag": etag_for(survey.version)}
    if status == 201:
        headers["Location"] = f"/v1/surveys/{survey.id}"
    return json_response(service.to_read(survey), status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Create a survey",
    description="A new survey, as a draft. NPS, CSAT and CES surveys have one required score question on the "
    "metric's scale (NPS 0-10, CSAT 1-5, CES 1-7 where 1 = very difficult and 7 = very easy); leave `questions` "
    "out to get the standard wording plus a comment box. Custom surveys take any rating (with its scale), text, "
    "single- or multi-choice questions, at most one of them tagged with a metric. `trigger` and "
    "`recurrence_days` say when invitations go out automatically. Needs `write`.",
    responses=problem_responses(401, 403, 422),
)
async def create_survey(body: SurveyCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[SurveyRead]:
    async def operation() -> ModelResponse[SurveyRead]:
        return _one(await service.create_survey(session, body), 201)

    return await idem.execute(session, operation)


@router.get(
    "",
    summary="List surveys",
    description="Newest first; filter by `status`, `kind` or `touchpoint`; paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_surveys(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    status: Annotated[Status | None, Query(description="Only surveys in this status.", examples=["active"])] = None,
    kind: Annotated[Kind | None, Query(description="Only surveys of this kind.", examples=["nps"])] = None,
    touchpoint: Annotated[QueryText | None, Query(max_length=100, description="Only surveys of this touchpoint (key).")] = None,
) -> ModelResponse[Page[SurveyRead]]:
    rows, next_cursor = await service.list_surveys(session, page, status=status, kind=kind, touchpoint=touchpoint)
    return json_response(Page[SurveyRead](items=[service.to_read(r) for r in rows], next_cursor=next_cursor))


@router.get(
    "/{survey_id}",
    summary="Get a survey",
    description=f"One survey with its questions, trigger and `ETag`. {NOT_MODIFIED_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_survey(
    survey_id: SurveyId, request: Request, session: SessionDep, _: Reader
) -> ModelResponse[SurveyRead] | Response:
    survey = await service.get_survey(session, survey_id)
    return unchanged(request, survey.version) or _one(survey)


@router.patch(
    "/{survey_id}",
    summary="Update a survey or change its status",
    description="Changes the fields sent. `status` moves draft -> active (invitations and answers accepted) -> "
    "closed (answers refused); a closed survey can be reopened; back to draft only while nobody answered (409 "
    "otherwise). `questions` change only in draft. The kind never changes. Honours `If-Match` (412 if stale). "
    "Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_survey(
    survey_id: SurveyId, body: SurveyUpdate, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
) -> ModelResponse[SurveyRead]:
    async def operation() -> ModelResponse[SurveyRead]:
        return _one(await service.update_survey(session, survey_id, body, if_match))

    return await idem.execute(session, operation)


@router.delete(
    "/{survey_id}",
    status_code=204,
    summary="Delete a survey",
    description="Deletes a survey nobody was invited to; one with invitations or answers is a 409 (close it "
    "instead, so its history stays). Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def delete_survey(survey_id: SurveyId, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None) -> Response:
    async def operation() -> Response:
        await service.delete_survey(session, survey_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)
