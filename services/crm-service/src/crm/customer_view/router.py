"""/v1/customers/{id}/view and /v1/customers/{id}/timeline"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from crm.customer_view import service
from crm.customer_view.schemas import TIMELINE_KINDS, CustomerView, Timeline, TimelineKind
from crm.fields import CustomerIdPath
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import PgPoolDep, pool_of
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.problems import MERGED_AWAY_RESPONSE, problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/customers", tags=["customers"], route_class=TypedRoute)


@router.get(
    "/{customer_id}/view",
    summary="The joined customer view",
    description="Everything a salesperson needs on one screen: the record, open deals and their total, interaction stats "
    "(count, last interaction, last contacted, purchases, average order value, purchase frequency per 30 days), open "
    "tasks, and `experience`: the latest NPS answer and its category, CSAT (mean and % satisfied) and CES means, the "
    "number of survey responses, the last feedback with its sentiment, open follow-ups, and invitations made, "
    "suppressed, reminded and withdrawn. `experience` comes from the CEM service's events kept in the CRM, so it "
    "answers (with the last known data) while the CEM service is down; it is null while the CEM service has reported "
    "nothing about the customer. "
    "A merged duplicate redirects (308) to its survivor's view. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | MERGED_AWAY_RESPONSE,
)
async def customer_view(customer_id: CustomerIdPath, request: Request, _: Reader) -> ModelResponse[CustomerView]:
    return json_response(await service.customer_view(pool_of(request), customer_id))


@router.get(
    "/{customer_id}/timeline",
    summary="The customer's timeline",
    description="Interactions, deal stage changes, changes of the customer's own fields (`customer_changed`: the "
    "entries of its history, with who made them and how), tasks created and completed, documents added, and what the CEM "
    "service reported (`survey.invited`, `survey.reminded`, `survey.invitation_cancelled`, `survey.opted_out`, "
    "`survey.opted_in`, `survey.throttled` with its reason, `survey.response.submitted`, `feedback.received`, "
    "`followup.requested` with the task made for it), newest first, paginated with `limit` and `cursor`. `kind` "
    "(repeatable) keeps only those kinds. A merged duplicate redirects (308) to its survivor's timeline, which holds its "
    "history (the duplicate's own field changes stay in the duplicate's `history`). Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | MERGED_AWAY_RESPONSE,
)
async def customer_timeline(
    customer_id: CustomerIdPath,
    pool: PgPoolDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    kind: Annotated[list[TimelineKind] | None, Query(description="Only these kinds (repeat the parameter).")] = None,
) -> ModelResponse[Timeline]:
    kinds = list(dict.fromkeys(kind)) if kind else list(TIMELINE_KINDS)
    return json_response(await service.customer_timeline(pool, customer_id, kinds, page))
