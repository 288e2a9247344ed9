"""/v1/feedback"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query

from cem.feedback import service
from cem.feedback.schemas import FeedbackCreate, FeedbackRead, SentimentLabel
from cem.fields import From, To
from cxkit.fields import QueryText
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.params import id_path
from cxkit.http.problems import problem_responses
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


@router.get(
    "",
    summary="List feedback",
    description="Newest first; filter by `customer_id`, `touchpoint`, `channel`, `sentiment` and a time window "
    "(`from` inclusive, `to` exclusive); paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_feedback(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    since: From = None,
    until: To = None,
    customer_id: Annotated[uuid.UUID | None, Query(description="Only this customer's feedback.")] = None,
    touchpoint: Annotated[
        QueryText | None, Query(max_length=100, description="Only feedback about this touchpoint (key).")
    ] = None,
    channel: Annotated[QueryText | None, Query(max_length=50, description="Only feedback from this channel.")] = None,
    sentiment: Annotated[SentimentLabel | None, Query(description="Only this sentiment.", examples=["negative"])] = None,
) -> ModelResponse[Page[FeedbackRead]]:
    rows, next_cursor = await service.list_feedback(
        session,
        page,
        customer_id=customer_id,
        touchpoint=touchpoint,
        channel=channel,
        sentiment=sentiment,
        since=since,
        until=until,
    )
    return json_response(Page[FeedbackRead](items=[service.to_read(r) for r in rows], next_cursor=next_cursor))


@router.get(
    "/{feedback_id}",
    summary="Get feedback",
    description="One piece of feedback with its sentiment. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_feedback(feedback_id: FeedbackId, session: SessionDep, _: Reader) -> ModelResponse[FeedbackRead]:
    return json_response(service.to_read(await service.get_feedback(session, feedback_id)))
