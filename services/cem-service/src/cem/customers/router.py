"""/v1/customers/{id}/experience"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from cem.customers import service
from cem.customers.schemas import CustomerExperience
from cem.fields import id_path
from cxkit.http.app import json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.problems import problem_responses

router = APIRouter(prefix="/customers", tags=["customers"])
CustomerId = Annotated[uuid.UUID, id_path("customer", "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10")]


@router.get(
    "/{customer_id}/experience",
    response_model=CustomerExperience,
    summary="A customer's experience",
    description="The joined view from the CEM side: the customer as the CRM announced it (kept locally, so this "
    "answers while the CRM is down), a summary (responses, latest NPS and its category, CSAT/CES averages, "
    "feedback, open follow-ups), and their latest invitations, answers, feedback, follow-ups and touchpoint "
    "history (`limit` of each, newest first). 404 until the CRM has announced the customer. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_experience(
    customer_id: CustomerId,
    session: SessionDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=100, description="Items in each list (1-100).")] = 20,
) -> Response:
    return json_response(await service.experience(session, customer_id, limit))
