"""/v1/leads"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from crm.customers.repository import note_author
from crm.customers.schemas import CustomerRead
from crm.deals.schemas import DealRead
from crm.deps import ActorDep, SettingsDep
from crm.fields import EXAMPLE_IDS, LeadIdPath
from crm.leads import service
from crm.leads.repository import SORT_KEYS, LeadFilters
from crm.leads.schemas import LeadConversion, LeadConvert, LeadCreate, LeadPage, LeadRead, LeadStatus, LeadUpdate
from cxkit import keyset
from cxkit.fields import QueryText
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.csv_export import CsvExport, csv_export, csv_response_doc
from cxkit.http.deps import PgPoolDep, SessionDep
from cxkit.http.etag import IF_NONE_MATCH_PARAMETER, NOT_MODIFIED_RESPONSE, NOT_MODIFIED_TEXT, etag_for, unchanged
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.params import SYNC_TEXT, ChangedDep, IfMatch
from cxkit.http.problems import only_these_methods, problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/leads", tags=["leads"], route_class=TypedRoute)


@router.post(
    "",
    status_code=201,
    summary="Create a lead",
    description="A prospect with an email or a name, a `status` (new, working, qualified, disqualified) and a `score` "
    "(0..100). A lead from a campaign (`campaign_id`, which must exist) is recorded as a member of it that responded. "
    "Needs `write`.",
    responses=problem_responses(401, 403, 422),
)
async def create_lead(body: LeadCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[LeadRead]:
    async def operation() -> ModelResponse[LeadRead]:
        lead = await service.create_lead(session, body)
        return json_response(
            LeadRead.model_validate(lead), 201, headers={"ETag": etag_for(lead.version), "Location": f"/v1/leads/{lead.id}"}
        )

    return await idem.execute(session, operation)


async def lead_filters(
    changed: ChangedDep,
    q: Annotated[QueryText | None, Query(min_length=1, max_length=200, description="Search in name, email, company.")] = None,
    status: LeadStatus | None = None,
    owner: Annotated[QueryText | None, Query(min_length=1, max_length=200)] = None,
    campaign_id: uuid.UUID | None = None,
    converted: bool | None = None,
) -> LeadFilters:
    """The filters of the lead list, read from the query (the export takes the same)."""
    return LeadFilters(q=q, status=status, owner=owner, campaign_id=campaign_id, converted=converted, changed=changed)


FiltersDep = Annotated[LeadFilters, Depends(lead_filters)]
SortParam = Annotated[str, Query(pattern=keyset.sort_pattern(SORT_KEYS), description="Sort key, `-` for descending.")]
EXPORT_COLUMNS = tuple(LeadRead.model_fields)
EXPORT_EXAMPLE = (
    ",".join(EXPORT_COLUMNS)
    + "\r\n"
    + f"{EXAMPLE_IDS['lead']},grace@example.com,Grace Hopper,Navy Computing Lab,'+1 202 555 0147,Head of Engineering,"
    + f"webinar,{EXAMPLE_IDS['campaign']},new,40,sam@yourcompany.example,,,,,,1,2026-11-23T10:00:00+00:00,"
    + "2026-11-23T10:00:00+00:00\r\n"
)


@router.get(
    "",
    summary="List leads",
    description="Filter by `q` (name, email, company), `status`, `owner`, `campaign_id`, `converted`. `sort`: "
    "`created_at`, `updated_at` or `score`, `-` for descending (default `-created_at`; `-score` puts the hottest "
    f"first). {SYNC_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_leads(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    filters: FiltersDep,
    sort: SortParam = "-created_at",
) -> ModelResponse[LeadPage]:
    rows, cursor = await service.list_leads(session, filters, sort, page)
    return json_response(LeadPage(items=[LeadRead.model_validate(r) for r in rows], next_cursor=cursor))


@router.get(
    "/export",
    status_code=200,
    summary="Export leads as CSV",
    description="Every lead the list shows with the same filters (`q`, `status`, `owner`, `campaign_id`, `converted`, "
    "the `updated_*` window) and in the same order (`sort`), unpaged, as a streamed `text/csv` attachment "
    "(`leads-<UTC timestamp>.csv`): a header row, then one line per lead with the fields of a lead read. "
    "Spreadsheet-safe: a text cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'` "
    "(a phone number such as `+1 202 555 0147` too; numbers stay numbers). Constant memory whatever the number of "
    "leads. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The leads, one per line after the header.", EXPORT_EXAMPLE) | problem_responses(401, 403, 422),
)
async def export_leads(pool: PgPoolDep, _: Reader, filters: FiltersDep, sort: SortParam = "-created_at") -> Response:
    query = service.export_query(filters, sort, EXPORT_COLUMNS)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_COLUMNS, row_of=list, name="leads")


only_these_methods(router, "/export")


@router.get(
    "/{lead_id}",
    summary="Get a lead",
    description=f"One lead with its `ETag`; a converted lead names its customer and deal. {NOT_MODIFIED_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_lead(lead_id: LeadIdPath, request: Request, session: SessionDep, _: Reader) -> ModelResponse[LeadRead] | Response:
    lead = await service.get_lead(session, lead_id)
    return unchanged(request, lead.version) or json_response(
        LeadRead.model_validate(lead), headers={"ETag": etag_for(lead.version)}
    )


@router.patch(
    "/{lead_id}",
    summary="Change a lead",
    description="Change status, score and details; a converted lead is read-only (409). Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_lead(
    lead_id: LeadIdPath, body: LeadUpdate, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
) -> ModelResponse[LeadRead]:
    async def operation() -> ModelResponse[LeadRead]:
        lead = await service.update_lead(session, lead_id, body, if_match)
        return json_response(LeadRead.model_validate(lead), headers={"ETag": etag_for(lead.version)})

    return await idem.execute(session, operation)


@router.delete(
    "/{lead_id}",
    status_code=204,
    summary="Delete a lead",
    description="Deletes the lead and its campaign memberships (for a lead this is the GDPR erasure). Honours `If-Match`. "
    "Needs `write`.",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def delete_lead(lead_id: LeadIdPath, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None) -> Response:
    async def operation() -> Response:
        await service.delete_lead(session, lead_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)


@router.post(
    "/{lead_id}/convert",
    summary="Convert a lead",
    description="In one transaction: links the lead to `customer_id`, or to the customer with the lead's email, or makes "
    "a new customer from the lead (announced as `customer.created`); optionally opens a `deal` for that customer "
    "(announced as `deal.stage_changed`); marks the lead qualified and converted; announces `lead.converted`. A linked "
    "customer keeps its values, gains the lead's where it has none, and moves forward in its lifecycle (never back): to "
    "`lifecycle_stage` when given, even with a deal; otherwise to `sql` without a deal, `opportunity` with one (`customer` "
    "if it is won). A new customer starts at that stage. A deal in a lost stage needs `deal.lost_reason`; a deal's "
    "errors are reported at `body.deal.<field>`. A converted or disqualified lead: 409. "
    "Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def convert_lead(
    lead_id: LeadIdPath, body: LeadConvert, session: SessionDep, idem: IdempotencyDep, actor: ActorDep, settings: SettingsDep
) -> ModelResponse[LeadConversion]:
    async def operation() -> ModelResponse[LeadConversion]:
        await note_author(session, actor, "lead_conversion")  # the customer it links may change
        lead, customer, created, deal = await service.convert_lead(session, lead_id, body, actor, settings.default_currency)
        return json_response(
            LeadConversion(
                lead=LeadRead.model_validate(lead),
                customer=CustomerRead.model_validate(customer),
                customer_created=created,
                deal=DealRead.of(*deal) if deal else None,
            )
        )

    return await idem.execute(session, operation)
