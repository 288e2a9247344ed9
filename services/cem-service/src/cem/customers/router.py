"""/v1/customers/{id}/experience"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from starlette.responses import Response

from cem.customers import service
from cem.customers.schemas import CustomerAsAnnounced, CustomerExperience
from cxkit.http.app import json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.problems import problem_responses

router = APIRouter(prefix="/customers", tags=["customers"])


@router.get(
    "/{customer_id}/experience",
    response_model=CustomerExperience,
    summary="A customer's experience",
    description="The joined view from the CEM side: the customer as the CRM announced it (kept locally, so "
    "this answers while the CRM is down). 404 until the CRM has announced the customer. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_experience(customer_id: uuid.UUID, session: SessionDep, _: Reader) -> Response:
    profile = await service.get_profile(session, customer_id)
    return json_response(CustomerExperience(customer=CustomerAsAnnounced.model_validate(profile)))
