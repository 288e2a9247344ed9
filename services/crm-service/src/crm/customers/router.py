"""/v1/customers"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from crm.customers import service
from crm.customers.schemas import CustomerCreate, CustomerRead
from cxkit.http.app import json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.etag import etag_for
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.problems import problem_responses

router = APIRouter(prefix="/customers", tags=["customers"])


@router.post(
    "",
    status_code=201,
    response_model=CustomerRead,
    summary="Create a customer",
    description="Creates a customer and announces `customer.created` on `crm.customers.v1`. "
    "The email is unique, compared case-insensitively (409 on a duplicate). Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_customer(body: CustomerCreate, session: SessionDep, idem: IdempotencyDep) -> Response:
    async def operation() -> Response:
        customer = await service.create_customer(session, body)
        return json_response(
            CustomerRead.model_validate(customer),
            201,
            headers={"ETag": etag_for(customer.version), "Location": f"/v1/customers/{customer.id}"},
        )

    return await idem.execute(session, operation)


@router.get(
    "/{customer_id}",
    response_model=CustomerRead,
    summary="Get a customer",
    description="One customer by id, with its `ETag` (its version). Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_customer(customer_id: uuid.UUID, session: SessionDep, _: Reader) -> Response:
    customer = await service.get_customer(session, customer_id)
    return json_response(CustomerRead.model_validate(customer), headers={"ETag": etag_for(customer.version)})


@router.get(
    "",
    response_model=Page[CustomerRead],
    summary="List customers",
    description="Newest first, paginated with `limit` and the opaque `cursor` of the previous page. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_customers(session: SessionDep, _: Reader, page: Annotated[PageParams, Depends(page_params)]) -> Response:
    rows, next_cursor = await service.list_customers(session, page)
    return json_response(Page[CustomerRead](items=[CustomerRead.model_validate(r) for r in rows], next_cursor=next_cursor))
