"""/v1/surveys/{id}/invitations and /v1/invitations/{id}"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query

from cem.deps import SettingsDep
from cem.invitations import service
from cem.invitations.schemas import (
    InvitationBatch,
    InvitationBatchItemResult,
    InvitationBatchResult,
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    InvitationStatus,
)
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.params import id_path
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(tags=["invitations"], route_class=TypedRoute)
SurveyId = Annotated[uuid.UUID, id_path("survey", "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c")]
InvitationId = Annotated[uuid.UUID, id_path("invitation", "7c9e1a3b-5d7f-4b2a-8c4e-6f8a0b2c4d6e")]


@router.post(
    "/surveys/{survey_id}/invitations",
    status_code=201,
    summary="Invite someone to a survey",
    description="Makes a one-time link to the survey's respondent page for a customer (`customer_id`) or an "
    "email address (linked to the customer with that email when known). The survey must be active (409 otherwise); "
    "customers who opted out of surveys or were erased are never invited (409). A request made by a person is not "
    "throttled; it counts towards the throttle and fatigue rules of automatic invitations. The answer carries the "
    "`token` and `url` once: only a hash of the token is stored. Announces `survey.invited` (with `email`, and "
    "`customer_id` when known). Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_invitation(
    survey_id: SurveyId, body: InvitationCreate, session: SessionDep, idem: IdempotencyDep, settings: SettingsDep
) -> ModelResponse[InvitationCreated]:
    async def operation() -> ModelResponse[InvitationCreated]:
        created = await service.create_invitation(session, survey_id, body, settings)
        return json_response(created, 201, headers={"Location": f"/v1/invitations/{created.id}"})

    return await idem.execute(session, operation)


@router.post(
    "/surveys/{survey_id}/invitations/batch",
    summary="Invite many to a survey",
    description="Up to 1,000 `items`, each as the body of `POST /v1/surveys/{id}/invitations` (`customer_id` or "
    "`email`, `touchpoint`, `channel`, `expires_in_days`): for sending a survey to a list. The survey must be active "
    "(409 for the whole batch otherwise). The answer (200) has one result per item, in order: `created` with the "
    "invitation, its `token` and `url` (shown this once), or `error` with the `problem` a single request would have "
    "answered: 422 with field `errors` for an invalid item, an unknown customer or touchpoint; 409 for a customer who "
    "opted out or was erased, or an item repeating the recipient (customer, or bare address) of an earlier item: only "
    "the first is invited. As for a single request, the survey's throttle and the fatigue rule do not hold these back, "
    "and they count towards both for automatic invitations. Each invitation made is announced by `survey.invited`. "
    "The batch is one transaction, done with a few statements whatever its size; an `Idempotency-Key` covers the "
    "whole batch. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)
async def create_invitations(
    survey_id: SurveyId, body: InvitationBatch, session: SessionDep, idem: IdempotencyDep, settings: SettingsDep
) -> ModelResponse[InvitationBatchResult]:
    async def operation() -> ModelResponse[InvitationBatchResult]:
        results = await service.create_invitations(session, survey_id, body.items, settings)
        counts = dict.fromkeys(("created", "error"), 0)
        for result in results:
            counts[result["status"]] += 1
        answer = InvitationBatchResult(
            results=[InvitationBatchItemResult(index=i, **result) for i, result in enumerate(results)], counts=counts
        )
        return json_response(answer)

    return await idem.execute(session, operation)


@router.get(
    "/surveys/{survey_id}/invitations",
    summary="List a survey's invitations",
    description="Newest first (by creation); filter by `customer_id` or `status` (scheduled, sent, opened, answered, "
    "expired, cancelled); paginated "
    "with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def list_invitations(
    survey_id: SurveyId,
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    customer_id: Annotated[uuid.UUID | None, Query(description="Only this customer's invitations.")] = None,
    status: Annotated[InvitationStatus | None, Query(description="Only invitations in this status.", examples=["sent"])] = None,
) -> ModelResponse[Page[InvitationRead]]:
    rows, next_cursor = await service.list_invitations(session, page, survey_id=survey_id, customer_id=customer_id, status=status)
    return json_response(Page[InvitationRead](items=rows, next_cursor=next_cursor))


@router.post(
    "/invitations/{invitation_id}/cancel",
    summary="Cancel an invitation",
    description="Withdraws an invitation not answered yet (sent to the wrong address, or no longer wanted): a "
    "scheduled one is never sent, and a sent one's links (its own and every reminder's) stop taking answers: the "
    "respondent page shows a 410 page and `POST /v1/responses` answers 409 with `reason` cancelled. It is reminded "
    "no more, and leaves the response rate; its withdrawal is announced as `survey.invitation_cancelled` (a "
    "scheduled one was never announced, so neither is its withdrawal). Answers the invitation, `cancelled` with "
    "`cancel_reason` by_request and `cancelled_at`; "
    "cancelling it again changes nothing; an answered invitation: 409. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def cancel_invitation(
    invitation_id: InvitationId, session: SessionDep, idem: IdempotencyDep
) -> ModelResponse[InvitationRead]:
    async def operation() -> ModelResponse[InvitationRead]:
        return json_response(service.to_read(await service.cancel_invitation(session, invitation_id)))

    return await idem.execute(session, operation)


@router.get(
    "/invitations/{invitation_id}",
    summary="Get an invitation",
    description="One invitation and its status (the link itself is only in the answer that created it). Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_invitation(invitation_id: InvitationId, session: SessionDep, _: Reader) -> ModelResponse[InvitationRead]:
    return json_response(service.to_read(await service.get_invitation(session, invitation_id)))
