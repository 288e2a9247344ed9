"""/v1/suppressions and /v1/opt-outs"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query
from pydantic import EmailStr

from cem.fields import From, To
from cem.suppressions import service
from cem.suppressions.schemas import OptOutRead, SuppressionRead, SuppressionReason
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/suppressions", tags=["suppressions"], route_class=TypedRoute)
opt_outs_router = GatedRouter(prefix="/opt-outs", tags=["suppressions"], route_class=TypedRoute)


@router.get(
    "",
    summary="List suppressed invitations",
    description="Invitations a survey's trigger, its recurrence or the scheduler would have made but a rule "
    "suppressed, with the reason: opted_out, erased, survey_throttle or fatigue. Each was also announced as "
    "`survey.throttled` (when the recipient is a customer). Newest first; filter by `survey_id`, `customer_id`, "
    "`reason` and a window on when it happened (`from` inclusive, `to` exclusive); paginated with `limit` and "
    "`cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_suppressions(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    survey_id: Annotated[
        uuid.UUID | None, Query(description="Only this survey's.", examples=["2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c"])
    ] = None,
    customer_id: Annotated[uuid.UUID | None, Query(description="Only this customer's.")] = None,
    reason: Annotated[SuppressionReason | None, Query(description="Only this reason.", examples=["fatigue"])] = None,
    since: From = None,
    until: To = None,
) -> ModelResponse[Page[SuppressionRead]]:
    rows, next_cursor = await service.list_suppressions(
        session, page, survey_id=survey_id, customer_id=customer_id, reason=reason, since=since, until=until
    )
    return json_response(Page[SuppressionRead](items=[SuppressionRead.model_validate(r) for r in rows], next_cursor=next_cursor))


@opt_outs_router.get(
    "",
    summary="List survey opt-outs",
    description="The recipients who asked, from a survey link (`/r/{token}/unsubscribe`), for no more surveys: "
    "when, through which survey and invitation, and for which customer. They are never invited again (the "
    "rules' suppressions say `opted_out`) until they undo it from their own link. The address is not kept, only "
    "its SHA-256, so an address is looked up with `email` (exact, case-insensitive): support can tell whether "
    "someone opted out, and when. Newest first; filter by `email`, `customer_id`, `survey_id` and a window on "
    "when it happened (`from` inclusive, `to` exclusive); paginated with `limit` and `cursor`. Customers opted "
    "out in the CRM (`survey_opt_out`) are not listed here. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_opt_outs(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    email: Annotated[
        EmailStr | None,
        Query(description="Only this address's opt-out (there is at most one).", examples=["ada@example.com"]),
    ] = None,
    customer_id: Annotated[uuid.UUID | None, Query(description="Only this customer's.")] = None,
    survey_id: Annotated[
        uuid.UUID | None,
        Query(description="Only those made from this survey's links.", examples=["2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c"]),
    ] = None,
    since: From = None,
    until: To = None,
) -> ModelResponse[Page[OptOutRead]]:
    rows, next_cursor = await service.list_opt_outs(
        session, page, email=email, customer_id=customer_id, survey_id=survey_id, since=since, until=until
    )
    return json_response(Page[OptOutRead](items=[OptOutRead.model_validate(r) for r in rows], next_cursor=next_cursor))
