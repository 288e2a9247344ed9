"""/v1/feedback"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Response

from cem.feedback import service
from cem.feedback.repository import EXPORT_HEADER, FeedbackFilters
from cem.feedback.schemas import FeedbackCreate, FeedbackRead, SentimentLabel
from cem.fields import From, To, check_window
from cxkit.fields import QueryText
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.csv_export import CsvExport, csv_export, csv_response_doc
from cxkit.http.deps import PgPoolDep, SessionDep
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.params import id_path
from cxkit.http.problems import only_these_methods, problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/feedback", tags=["feedback"], route_class=TypedRoute)
FeedbackId = Annotated[uuid.UUID, id_path("feedback", "3c5e7a9b-1d3f-4e5a-8b7c-9d1e3f5a7b9c")]


@router.post(
    "",
    status_code=201,
    summary="Record feedback",
    description="Free text from any channel (chat, email, phone notes, app store reviews...), for a customer "
    "(`customer_id`, or `email` resolved to one), or anonymous. Gets a sentiment label (positive, neutral, "
    "negative) and VADER compound score computed inside the service: no text is sent anywhere. An optional "
    "rating keeps its scale. Announces `feedback.received`. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_feedback(body: FeedbackCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[FeedbackRead]:
    async def operation() -> ModelResponse[FeedbackRead]:
        feedback = await service.record_feedback(session, body)
        return json_response(service.to_read(feedback), 201, headers={"Location": f"/v1/feedback/{feedback.id}"})

    return await idem.execute(session, operation)


CustomerFilter = Annotated[uuid.UUID | None, Query(description="Only this customer's feedback.")]
TouchpointFilter = Annotated[
    QueryText | None, Query(max_length=100, description="Only feedback about this touchpoint (key).", examples=["delivery"])
]
ChannelFilter = Annotated[QueryText | None, Query(max_length=50, description="Only feedback from this channel.")]


async def feedback_filters(
    since: From = None,
    until: To = None,
    customer_id: CustomerFilter = None,
    touchpoint: TouchpointFilter = None,
    channel: ChannelFilter = None,
    sentiment: Annotated[SentimentLabel | None, Query(description="Only this sentiment.", examples=["negative"])] = None,
) -> FeedbackFilters:
    """The filters of the feedback list, read from the query (the export takes the same)."""
    check_window(since, until)
    return FeedbackFilters(customer_id, touchpoint, channel, sentiment, since, until)


async def sentiment_report_filters(
    since: From = None,
    until: To = None,
    customer_id: CustomerFilter = None,
    touchpoint: TouchpointFilter = None,
    channel: ChannelFilter = None,
) -> FeedbackFilters:
    """The feedback list's filters but `sentiment`, which the sentiment report counts by."""
    return await feedback_filters(since, until, customer_id, touchpoint, channel)


FiltersDep = Annotated[FeedbackFilters, Depends(feedback_filters)]


@router.get(
    "",
    summary="List feedback",
    description="Newest first; filter by `customer_id`, `touchpoint`, `channel`, `sentiment` and a time window "
    "(`from` inclusive, `to` exclusive); paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_feedback(
    session: SessionDep, _: Reader, page: Annotated[PageParams, Depends(page_params)], filters: FiltersDep
) -> ModelResponse[Page[FeedbackRead]]:
    rows, next_cursor = await service.list_feedback(session, page, filters)
    return json_response(Page[FeedbackRead](items=[service.to_read(r) for r in rows], next_cursor=next_cursor))


EXPORT_EXAMPLE = (
    ",".join(EXPORT_HEADER)
    + "\r\n"
    + "3c5e7a9b-1d3f-4e5a-8b7c-9d1e3f5a7b9c,2026-11-23T14:05:00+00:00,0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10,,checkout,"
    + 'chat,"The courier was late, but support sorted it out.",4,1,5,positive,0.4215,ticket-8812,2026-11-23T14:05:01+00:00\r\n'
)


@router.get(
    "/export",
    status_code=200,
    summary="Export feedback as CSV",
    description="Every piece of feedback the list shows with the same filters (`customer_id`, `touchpoint`, `channel`, "
    "`sentiment`, `from`, `to`), newest first, unpaged, as a streamed `text/csv` attachment "
    "(`feedback-<UTC timestamp>.csv`): a header row, then one line per piece of feedback with the fields of a read "
    "(the sentiment as `sentiment_label` and `sentiment_score`; `text` empty once the customer's personal data was "
    "erased). Spreadsheet-safe: a text cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage return gets a "
    "leading `'`; numbers are left as numbers. Constant memory whatever the amount of feedback. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The feedback, one per line after the header.", EXPORT_EXAMPLE) | problem_responses(401, 403, 422),
)
async def export_feedback(pool: PgPoolDep, _: Reader, filters: FiltersDep) -> Response:
    query = service.export_query(filters)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_HEADER, row_of=list, name="feedback")


only_these_methods(router, "/export")


@router.get(
    "/{feedback_id}",
    summary="Get feedback",
    description="One piece of feedback with its sentiment. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_feedback(feedback_id: FeedbackId, session: SessionDep, _: Reader) -> ModelResponse[FeedbackRead]:
    return json_response(service.to_read(await service.get_feedback(session, feedback_id)))
