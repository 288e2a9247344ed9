"""/v1/customers"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Query, Request
from starlette.responses import Response

from crm.customers import duplicates, repository, service
from crm.customers.lifecycle import OtherDomains
from crm.customers.repository import SORT_KEYS, CustomerFilters, note_author
from crm.customers.schemas import (
    HISTORY_EXAMPLE,
    BatchItemResult,
    CustomerBatch,
    CustomerBatchResult,
    CustomerChangeRead,
    CustomerCreate,
    CustomerHistoryPage,
    CustomerMerge,
    CustomerPage,
    CustomerRead,
    CustomerUpdate,
    DuplicateCandidate,
    DuplicateCandidates,
    HistoryField,
    LifecycleStage,
)
from crm.deps import ActorDep
from crm.fields import EXAMPLE_IDS, CustomerIdPath
from cxkit import keyset
from cxkit.fields import QueryText, Timestamp
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Admin, Reader
from cxkit.http.csv_export import CsvExport, Download, csv_export, csv_response_doc
from cxkit.http.data_export import data_export, data_export_doc
from cxkit.http.deps import PgPoolDep, SessionDep, pool_of
from cxkit.http.etag import IF_NONE_MATCH_PARAMETER, NOT_MODIFIED_RESPONSE, NOT_MODIFIED_TEXT, etag_for, unchanged
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.params import IfMatch
from cxkit.http.problems import MERGED_AWAY_RESPONSE, field_problem, only_these_methods, problem_responses
from cxkit.http.routing import GatedRouter
from cxkit.kafka.outbox import wake_relay
from cxkit.pg_pool import RowInsert

router = GatedRouter(prefix="/customers", tags=["customers"], route_class=TypedRoute)


async def get_other_domains(request: Request) -> OtherDomains:
    """What the customers service asks of the other domains, as `crm.main` composed it."""
    other_domains: OtherDomains = request.app.state.customer_other_domains
    return other_domains


OtherDomainsDep = Annotated[OtherDomains, Depends(get_other_domains)]


def _answer(customer: object, status: int = 200) -> ModelResponse[CustomerRead]:
    body = CustomerRead.model_validate(customer)
    headers = {"ETag": etag_for(body.version)}
    if status == 201:
        headers["Location"] = f"/v1/customers/{body.id}"
    return json_response(body, status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Create a customer",
    description="Creates a customer and announces `customer.created` on `crm.customers.v1`. "
    "The email is unique, compared case-insensitively (409 on a duplicate). A customer from a campaign "
    "(`campaign_id`, which must exist) remembers it and counts as a member that responded. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_customer(
    body: CustomerCreate, session: SessionDep, idem: IdempotencyDep, others: OtherDomainsDep
) -> ModelResponse[CustomerRead]:
    async def operation() -> ModelResponse[CustomerRead]:
        return _answer(await service.create_customer(session, body, others.campaigns(session)), 201)

    return await idem.execute(session, operation)


@router.post(
    "/batch",
    summary="Create or update many customers (upsert)",
    description="Up to 1,000 `items`, each found by its `external_id` when it sends one (a customer found by the "
    "email instead, without an external id yet, is given it), else by its `email`. A found customer gets the fields "
    "sent (`tags` and `attributes` replaced whole; the rest kept), a new one needs `email` and `name`. The answer "
    "(200) has one result per item, in order: `created`, `updated` (with the fields that `changed`), `unchanged`, "
    "or `error` with a `problem` (422 with field `errors` for an invalid item, 409 for a taken email or external id, "
    "a merged or erased customer, or an item repeating the email, external id or customer of an earlier item of the "
    "batch: only the first of them is applied). Each created customer is announced by `customer.created`, each "
    "changed one by `customer.updated`; an unchanged one by nothing. The batch is one transaction, done with a few "
    "statements whatever its size; an `Idempotency-Key` covers the whole batch. Needs `write`.",
    responses=problem_responses(401, 403, 409, 413, 422),
)
async def upsert_customers(
    body: CustomerBatch, pool: PgPoolDep, idem: IdempotencyDep, others: OtherDomainsDep, actor: ActorDep
) -> ModelResponse[CustomerBatchResult]:
    async def prepare(conn: asyncpg.Connection) -> tuple[ModelResponse[CustomerBatchResult], list[RowInsert]]:
        results = await service.upsert_batch(
            conn,
            body.items,
            campaign_exists=others.campaign_exists,
            open_deal_value=others.open_deal_value,
            changed_by=actor,
        )
        counts = dict.fromkeys(("created", "updated", "unchanged", "error"), 0)
        for result in results:
            counts[result["status"]] += 1
        answer = CustomerBatchResult(
            results=[BatchItemResult(index=i, **result) for i, result in enumerate(results)], counts=counts
        )
        return json_response(answer), []

    response = await idem.write_locked(pool, prepare)
    wake_relay()
    return response


only_these_methods(router, "/batch", ("POST",))


async def customer_filters(
    q: Annotated[QueryText | None, Query(min_length=1, max_length=200, description="Search in name, email, company.")] = None,
    lifecycle_stage: LifecycleStage | None = None,
    tag: Annotated[QueryText | None, Query(min_length=1, max_length=50)] = None,
    owner: Annotated[QueryText | None, Query(min_length=1, max_length=200)] = None,
    campaign_id: uuid.UUID | None = None,
    external_id: Annotated[
        QueryText | None, Query(min_length=1, max_length=200, description="The customer with this external id.")
    ] = None,
    created_from: Annotated[Timestamp | None, Query(description="Created at or after (RFC 3339).")] = None,
    created_to: Annotated[Timestamp | None, Query(description="Created before (RFC 3339).")] = None,
    updated_from: Annotated[
        Timestamp | None, Query(description="Last changed at or after (RFC 3339): with `sort=updated_at`, what changed since.")
    ] = None,
    updated_to: Annotated[Timestamp | None, Query(description="Last changed before (RFC 3339).")] = None,
    include_removed: Annotated[
        bool,
        Query(
            description="Also the customers taken out of the list: merged duplicates (`merged_into_id` set) and erased "
            "customers (anonymous, `erased_at` set). With `updated_from` and `sort=updated_at`, a copy kept in step "
            "learns of merges and erasures too (both bump `updated_at`)."
        ),
    ] = False,
) -> CustomerFilters:
    """The filters of the customer list, read from the query (the export takes the same)."""
    for since, until, field in ((created_from, created_to, "created"), (updated_from, updated_to, "updated")):
        if since is not None and until is not None and since >= until:
            raise field_problem(["query", f"{field}_to"], f"{field}_from must be before {field}_to")
    return CustomerFilters(
        q=q,
        lifecycle_stage=lifecycle_stage,
        tag=tag,
        owner=owner,
        campaign_id=campaign_id,
        external_id=external_id,
        created_from=created_from,
        created_to=created_to,
        updated_from=updated_from,
        updated_to=updated_to,
        include_removed=include_removed,
    )


FiltersDep = Annotated[CustomerFilters, Depends(customer_filters)]
SortParam = Annotated[str, Query(pattern=keyset.sort_pattern(SORT_KEYS), description="Sort key, `-` for descending.")]

EXPORT_COLUMNS = tuple(CustomerRead.model_fields)
_TAGS = EXPORT_COLUMNS.index("tags")
EXPORT_EXAMPLE = (
    ",".join(EXPORT_COLUMNS)
    + "\r\n"
    + f"{EXAMPLE_IDS['customer']},ada@example.com,Ada Lovelace,'+44 20 7946 0018,Analytical Engines Ltd,lead,"
    'sam@yourcompany.example,vip;newsletter,"{""plan"":""pro""}",webshop,,false,1,'
    "2026-11-23T10:00:00+00:00,2026-11-23T10:00:00+00:00,,,\r\n"
)


def _export_row(record: asyncpg.Record) -> list[Any]:
    row = list(record.values())
    row[_TAGS] = ";".join(row[_TAGS])
    return row


@router.get(
    "/export",
    status_code=200,
    summary="Export customers as CSV",
    description="Every customer the list shows with the same filters (`q`, `lifecycle_stage`, `tag`, `owner`, "
    "`campaign_id`, `external_id`, the `created_*` and `updated_*` windows, `include_removed`) and in the same order "
    "(`sort`), unpaged, as a streamed `text/csv` attachment "
    "(`customers-<UTC timestamp>.csv`): a header row, then one line per customer with the fields of a customer read "
    "(`tags` joined with `;`, `attributes` as compact JSON). Merged duplicates and erased customers are left out, as "
    "in the list, unless `include_removed=true`. Spreadsheet-safe: a text cell beginning with `=`, `+`, `-`, `@`, a "
    "tab or a carriage return gets a leading `'`; numbers are left as numbers. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The customers, one per line after the header.", EXPORT_EXAMPLE)
    | problem_responses(401, 403, 422),
)
async def export_customers(pool: PgPoolDep, _: Reader, filters: FiltersDep, sort: SortParam = "-created_at") -> Response:
    query = service.export_query(filters, sort, EXPORT_COLUMNS)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_COLUMNS, row_of=_export_row, name="customers")


only_these_methods(router, "/export")


@router.get(
    "/{customer_id}",
    summary="Get a customer",
    description=f"One customer by id, with its `ETag` (its version: every change bumps it). {NOT_MODIFIED_TEXT} "
    "An erased customer is returned "
    "anonymous (personal fields null, `erased_at` set). A duplicate merged into another customer answers 308 with "
    "`Location` pointing at the survivor and `merged_into` in the body. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | MERGED_AWAY_RESPONSE | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_customer(customer_id: CustomerIdPath, request: Request, _: Reader) -> ModelResponse[CustomerRead] | Response:
    customer = await service.read_customer(pool_of(request), customer_id)
    return unchanged(request, customer["version"]) or _answer(customer)


@router.get(
    "/{customer_id}/history",
    summary="A customer's field history",
    description="Every change of the customer's fields, newest first: when, the version it made, who (`changed_by`, "
    "the API key's name), what made it (`via`) and each field's value before and after. Every path that changes a "
    "customer is recorded (a PATCH, a batch upsert, a merge, an erasure, a lead conversion, a deal moving the "
    "lifecycle stage, an opt-out of surveys or an opt-in to them again the CEM service reported), in the same "
    "transaction as the change: the database writes it. How the customer began is the record itself (`created_at`); "
    "imports and creations add no entry. `field` keeps the changes of that field. A merged duplicate keeps its own "
    "history up to the merge (no redirect here); the survivor's shows the fields the merge filled. After an erasure the "
    "personal fields (email, name, phone, company, attributes) stay listed where they changed, with null values. "
    "Paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def customer_history(
    customer_id: CustomerIdPath,
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    field: Annotated[HistoryField | None, Query(description="Only the changes of this field.")] = None,
) -> ModelResponse[CustomerHistoryPage]:
    entries, cursor = await service.customer_history(session, customer_id, field, page)
    return json_response(CustomerHistoryPage(items=[CustomerChangeRead.model_validate(e) for e in entries], next_cursor=cursor))


EXPORT_EXAMPLE = {
    "service": "crm-service",
    "customer_id": EXAMPLE_IDS["customer"],
    "generated_at": "2026-12-05T17:00:00.000000+00:00",
    "sections": {
        "customers": [{"id": EXAMPLE_IDS["customer"], "email": "ada@example.com", "name": "Ada Lovelace", "version": 3}],
        "customer_changes": [HISTORY_EXAMPLE],
        "interactions": [{"id": EXAMPLE_IDS["interaction"], "type": "purchase", "amount": "129.90", "currency": "EUR"}],
        "deals": [],
    },
}


@router.get(
    "/{customer_id}/data-export",
    status_code=200,
    summary="Export a customer's data (GDPR)",
    description="Everything this service holds about the customer, for a data subject's access or portability request "
    "(GDPR articles 15 and 20), as one JSON document streamed as an attachment "
    "(`customer-<id>-<UTC timestamp>.json`): `sections` maps each table to its rows with all their columns: "
    "`customers` (the record and the duplicates merged into it), `customer_changes` (their field history), "
    "`interactions`, `customer_interaction_stats`, `deals` and `deal_stage_changes`, `tasks`, `documents` (the "
    "files' details; each file is at `GET /v1/documents/{id}/content`), `campaign_members`, `leads` (converted into "
    "the customer or with their address) and `experience_events` (what the CEM service reported). One consistent "
    "snapshot, in constant memory. The CEM service's part is its own `GET /v1/customers/{id}/data-export`. An erased "
    "customer's export shows what the erasure left. A merged duplicate redirects (308) to its survivor's. Needs "
    "`admin`.",
    response_class=Download,
    responses=data_export_doc(EXPORT_EXAMPLE) | problem_responses(401, 403, 404, 422) | MERGED_AWAY_RESPONSE,
)
async def export_customer_data(customer_id: CustomerIdPath, pool: PgPoolDep, _: Admin, others: OtherDomainsDep) -> Response:
    await service.read_customer(pool, customer_id)  # 404, or 308 for a merged duplicate
    sections = [*repository.EXPORT_SECTIONS, *others.export_sections]
    return await data_export(pool, "crm-service", customer_id, sections)


@router.get(
    "/{customer_id}/duplicates",
    summary="Possible duplicates of a customer",
    description="Other customers who may be the same person, best first, for a person to review and merge "
    "(`POST /v1/customers/{id}/merge`): those whose name, email or company has a run of words like this customer's "
    "name (or, for a customer without one or with one of one or two letters, their email's local part), found "
    "through the search's trigram index, each "
    "with a `score` and the `reasons` (a similar name, and the same phone, company or email local part). Merged "
    "duplicates and erased customers are never offered. A customer with a name of one or two letters is also compared "
    "with the customers of the very same name who share their phone, company or email local part; one without a name "
    "or an email of three letters or more has none. A merged duplicate redirects (308) to its survivor's. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | MERGED_AWAY_RESPONSE,
)
async def customer_duplicates(
    customer_id: CustomerIdPath,
    pool: PgPoolDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=50, description="At most this many (default 10).")] = 10,
) -> ModelResponse[DuplicateCandidates]:
    async with pool.acquire() as conn:
        customer = await service.read_customer(conn, customer_id)
        found = await duplicates.look_alikes(conn, customer, limit)
    return json_response(
        DuplicateCandidates(
            items=[
                DuplicateCandidate(customer=CustomerRead.model_validate(c.customer), score=c.score, reasons=c.reasons)
                for c in found
            ]
        )
    )


@router.get(
    "",
    summary="List and search customers",
    description="Filters: `q` searches name, email and company (case-insensitive substring), `lifecycle_stage`, `tag`, "
    "`owner`, `campaign_id`, `external_id`, and time windows on creation (`created_from` inclusive, `created_to` "
    "exclusive) and on the last change (`updated_from`, `updated_to`). `sort`: `created_at`, `updated_at`, `name` or "
    "`email`, `-` for descending (default `-created_at`); customers without the sorted value come last. What changed "
    "since a moment: `updated_from=<moment>&sort=updated_at`, page by page. Merged duplicates and erased customers are "
    "left out, unless `include_removed=true` (for a copy kept in step: it then learns of merges and erasures). "
    "Paginated with `limit` and the opaque `cursor` of the previous page. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_customers(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    filters: FiltersDep,
    sort: SortParam = "-created_at",
) -> ModelResponse[CustomerPage]:
    rows, next_cursor = await service.list_customers(session, filters, sort, page)
    return json_response(CustomerPage(items=[CustomerRead.model_validate(r) for r in rows], next_cursor=next_cursor))


@router.patch(
    "/{customer_id}",
    summary="Change a customer",
    description="Changes the fields sent (`tags` and `attributes` are replaced whole), bumps `version` and announces "
    "`customer.updated` with the names of the fields that `changed` (nothing changed: no new version, no event). "
    "With `If-Match`, a stale version is refused with 412. A new email taken by another customer: 409. A merged or "
    "erased customer: 409. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_customer(
    customer_id: CustomerIdPath,
    body: CustomerUpdate,
    pool: PgPoolDep,
    idem: IdempotencyDep,
    others: OtherDomainsDep,
    actor: ActorDep,
    if_match: IfMatch = None,
) -> ModelResponse[CustomerRead]:
    async def prepare(conn: asyncpg.Connection) -> tuple[ModelResponse[CustomerRead], list[RowInsert]]:
        customer, rows = await service.update_customer_on(
            conn,
            customer_id,
            body,
            if_match,
            campaign_exists=others.campaign_exists,
            open_deal_value=others.open_deal_value,
            changed_by=actor,
        )
        return _answer(customer), rows

    response = await idem.write_locked(pool, prepare)
    wake_relay()
    return response


@router.delete(
    "/{customer_id}",
    status_code=204,
    summary="Erase a customer (GDPR)",
    description="Erases the customer's personal data: email, name, phone, company and attributes; the free text of their "
    "interactions, tasks and deals; what they wrote in survey answers and feedback (as reported by the CEM service); "
    "their documents (files deleted); the leads they came from; duplicates merged into them; the events already sent "
    "about them and the stored answers of idempotent requests that mention them; the personal values in their field "
    "`history` (which fields changed stays). The record and its anonymous history "
    "(amounts, dates, stage changes, scores) stay, so reports still add up. Announces `customer.erased`, so the CEM "
    "service erases them too. Erasing again changes nothing (204). Needs `admin`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def erase_customer(
    customer_id: CustomerIdPath, session: SessionDep, idem: IdempotencyDep, admin: Admin, others: OtherDomainsDep
) -> Response:
    async def operation() -> Response:
        await note_author(session, admin.name, "erasure")
        await service.erase_customer(session, customer_id, customer_data=others.customer_data, stored_files=others.stored_files)
        return Response(status_code=204)

    return await idem.execute(session, operation)


@router.post(
    "/{customer_id}/merge",
    summary="Merge a duplicate into this customer",
    description="In one transaction the customer in the path (the survivor) keeps its values, takes the duplicate's where "
    "it has none, unites the tags and attributes, keeps a survey opt-out from either, and takes over the duplicate's "
    "interactions, deals, tasks, documents, campaign memberships, converted leads and experience data (survey answers, "
    "feedback, follow-ups reported by the CEM service). The duplicate is marked "
    "`merged_into_id` and its email freed; reads of it redirect (308) to the survivor. The keys: a survivor without an "
    "`email` takes the duplicate's (a batch upsert or a new customer with that address then finds the survivor), and "
    "one without an `external_id` takes the duplicate's, which the merged record then no longer holds. An "
    "`external_id` the survivor did not take (it has its own) stays on the merged record: a batch upsert by it answers "
    "409 naming the survivor instead of making the duplicate again, and the list with `include_removed=true` finds the "
    "merged record by it. Duplicates merged earlier into the duplicate now point at the survivor, each with a new "
    "`version` and `updated_at`. Announces `customer.merged` with the survivor as it is now (the fields it took "
    "included) so the CEM side re-keys its data. `If-Match` applies to the survivor. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def merge_customers(
    customer_id: CustomerIdPath,
    body: CustomerMerge,
    session: SessionDep,
    idem: IdempotencyDep,
    others: OtherDomainsDep,
    actor: ActorDep,
    if_match: IfMatch = None,
) -> ModelResponse[CustomerRead]:
    async def operation() -> ModelResponse[CustomerRead]:
        await note_author(session, actor, "merge")
        merged = await service.merge_customers(
            session,
            customer_id,
            body.duplicate_id,
            if_match,
            customer_data=others.customer_data,
            open_deal_value=others.open_deal_value,
        )
        return _answer(merged)

    return await idem.execute(session, operation)
