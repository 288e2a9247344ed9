"""/v1/responses"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Query
from starlette.responses import Response

from cem.deps import SettingsDep
from cem.fields import From, To, check_window
from cem.responses import service
from cem.responses.repository import EXPORT_HEADER, ResponseFilters
from cem.responses.schemas import ResponseCreate, ResponseRead
from cxkit.fields import QueryText
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.csv_export import CsvExport, csv_export, csv_response_doc
from cxkit.http.deps import PgPoolDep, SessionDep
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.params import id_path
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/responses", tags=["responses"], route_class=TypedRoute)
ResponseId = Annotated[uuid.UUID, id_path("response", "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d")]


@router.post(
    "",
    status_code=201,
    summary="Record an answer",
    description="For API clients (apps, kiosks, imports): answer an invitation by its `token`, or a survey by "
    "`survey_id` for a customer, an email or anonymously. The same rules as the respondent page: the survey must "
    "be active and an invitation is answered once (409 with `reason` already_answered, expired, cancelled, "
    "survey_closed, or survey_draft for a survey that is, or went back to, a draft); answers are checked against "
    "the questions (422 names each bad one), a line break in a text (CRLF, CR or LF) counting and stored as one LF, "
    "and a choice matching its option whatever line breaks it came with. Announces "
    "`survey.response.submitted`, and `followup.requested` when a known customer answers NPS 0-6, CSAT 1-2 or "
    "CES 1-2. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_response(
    body: ResponseCreate, session: SessionDep, idem: IdempotencyDep, settings: SettingsDep
) -> ModelResponse[ResponseRead]:
    async def operation() -> ModelResponse[ResponseRead]:
        created = await service.submit_from_api(session, body, settings.followup_sla)
        return json_response(created, 201, headers={"Location": f"/v1/responses/{created.id}"})

    return await idem.execute(session, operation)


async def response_filters(
    since: From = None,
    until: To = None,
    survey_id: Annotated[uuid.UUID | None, Query(description="Only answers to this survey.")] = None,
    customer_id: Annotated[uuid.UUID | None, Query(description="Only this customer's answers.")] = None,
    touchpoint: Annotated[
        QueryText | None, Query(max_length=100, description="Only answers about this touchpoint (key).")
    ] = None,
) -> ResponseFilters:
    """The filters of the response list, read from the query (the export takes the same)."""
    check_window(since, until)
    return ResponseFilters(survey_id=survey_id, customer_id=customer_id, touchpoint=touchpoint, since=since, until=until)


FiltersDep = Annotated[ResponseFilters, Depends(response_filters)]


@router.get(
    "",
    summary="List answers",
    description="Newest first; filter by `survey_id`, `customer_id`, `touchpoint` and a time window (`from` "
    "inclusive, `to` exclusive); paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_responses(
    session: SessionDep, _: Reader, page: Annotated[PageParams, Depends(page_params)], filters: FiltersDep
) -> ModelResponse[Page[ResponseRead]]:
    rows, next_cursor = await service.list_responses(session, page, filters)
    return json_response(Page[ResponseRead](items=rows, next_cursor=next_cursor))


EXPORT_EXAMPLE = (
    ",".join(EXPORT_HEADER)
    + "\r\n"
    + "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d,2026-11-23T10:12:00+00:00,2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c,checkout,"
    '0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10,,web,nps,9,0,10,promoter,"{""nps"":9,""reason"":""Fast delivery""}"\r\n'
)


def _export_row(record: asyncpg.Record) -> list[Any]:
    *fields, answers = record.values()
    # The answers as question id -> value, in the order they were asked (the wording is the survey's).
    return [*fields, {answer["question_id"]: answer.get("value") for answer in answers}]


@router.get(
    "/export",
    status_code=200,
    summary="Export answers as CSV",
    description="Every answer the list shows with the same filters (`survey_id`, `customer_id`, `touchpoint`, `from`, "
    "`to`), newest first, unpaged, as a streamed `text/csv` attachment (`responses-<UTC timestamp>.csv`): a header "
    "row, then one line per response with its score (`metric`, `score` on `scale_min`..`scale_max`, `category`; "
    "empty when the survey measures none or the question was skipped), survey, touchpoint, customer and time, and "
    "`answers` as compact JSON (question id -> value). Spreadsheet-safe: a text cell beginning with `=`, `+`, `-`, "
    "`@`, a tab or a carriage return gets a leading `'`; numbers are left as numbers. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The answers, one per line after the header.", EXPORT_EXAMPLE) | problem_responses(401, 403, 422),
)
async def export_responses(pool: PgPoolDep, _: Reader, filters: FiltersDep) -> Response:
    query = service.export_query(filters)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_HEADER, row_of=_export_row, name="responses")


@router.get(
    "/{response_id}",
    summary="Get an answer",
    description="One response with every answer, its score (metric, scale, category) and whether a follow-up was requested. "
    "Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_response(response_id: ResponseId, session: SessionDep, _: Reader) -> ModelResponse[ResponseRead]:
    return json_response(await service.get_response(session, response_id))
