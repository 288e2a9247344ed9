"""/v1/customers/{id}/experience and /v1/customers/{id}/data-export"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query
from starlette.responses import Response

from cem.customer_data import export_sections
from cem.customer_view import service
from cem.customer_view.schemas import CustomerExperience
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Admin, Reader
from cxkit.http.csv_export import Download
from cxkit.http.data_export import data_export, data_export_doc
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


EXPORT_EXAMPLE = {
    "service": "cem-service",
    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "generated_at": "2026-12-05T17:00:00.000000+00:00",
    "sections": {
        "customer_profiles": [{"id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10", "email": "ada@example.com", "name": "Ada"}],
        "responses": [{"id": "d5e6f7a8-b9c0-4d1e-8f2a-3b4c5d6e7f80", "answers": [{"question_id": "nps", "value": 9}]}],
        "feedback": [],
    },
}


@router.get(
    "/{customer_id}/data-export",
    status_code=200,
    summary="Export a customer's data (GDPR)",
    description="Everything this service holds about the customer, for a data subject's access or portability request "
    "(GDPR articles 15 and 20), as one JSON document streamed as an attachment "
    "(`customer-<id>-<UTC timestamp>.json`): `sections` maps each table to its rows with all their columns: "
    "`customer_profiles` (the customer as the CRM announced it, and the duplicates merged into it), "
    "`customer_experience_totals`, `invitations`, `responses` (with every answer), `scores`, `followups`, "
    "`feedback`, `touchpoint_interactions` and `suppressions`, each by the customer's id or, for rows kept before the "
    "CRM announced them, by their address. One consistent snapshot, in constant memory. The CRM's part is its own "
    "`GET /v1/customers/{id}/data-export`. An erased customer's export shows what the erasure left. A merged "
    "duplicate redirects (308) to its survivor's. Needs `admin`.",
    response_class=Download,
    responses=data_export_doc(EXPORT_EXAMPLE) | problem_responses(401, 403, 404, 422) | MERGED_AWAY_RESPONSE,
)
async def export_customer_data(customer_id: CustomerId, pool: PgPoolDep, _: Admin) -> Response:
    await service.exportable_customer(pool, customer_id)
    return await data_export(pool, "cem-service", customer_id, export_sections())
