"""/v1/customers/{id}/experience"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from cem.customer_view import service
from cem.customer_view.schemas import CustomerExperience
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import PgPoolDep
from cxkit.http.params import id_path
from cxkit.http.problems import MERGED_AWAY_RESPONSE, problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/customers", tags=["customers"], route_class=TypedRoute)
CustomerId = Annotated[uuid.UUID, id_path("customer", "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10")]


@router.get(
    "/{customer_id}/experience",
    summary="A customer's experience",
    description="The joined view from the CEM side: the customer as the CRM announced it (kept locally, so this "
    "answers while the CRM is down: lifecycle stage, open deal value, the lead they were converted from), a "
    "summary (responses, latest NPS and its category, CSAT/CES averages, feedback, open follow-ups, suppressed "
    "invitations), and their latest invitations, answers, feedback, follow-ups, suppressions and touchpoint "
    "history (`limit` of each, newest first). 404 until the CRM has announced the customer. A customer merged "
    "into another answers 308 with `Location` (the survivor's view) and `merged_into`, as the CRM does: clients "
    "that follow redirects get the survivor's view, which holds all the answers. An erased customer's view has "
    "no personal data (and `erased_at`). Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | MERGED_AWAY_RESPONSE,
)
async def get_experience(
    customer_id: CustomerId,
    pool: PgPoolDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=100, description="Items in each list (1-100).")] = 20,
) -> ModelResponse[CustomerExperience]:
    return json_response(await service.experience(pool, customer_id, limit))
