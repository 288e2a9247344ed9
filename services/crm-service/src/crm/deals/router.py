"""/v1/deals"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request
from starlette.responses import Response

from crm.customers.repository import note_author
from crm.deals import service
from crm.deals.repository import SORT_KEYS, DealFilters
from crm.deals.schemas import (
    READ_EXAMPLE,
    DealCreate,
    DealHistoryPage,
    DealPage,
    DealRead,
    DealStageChangeRead,
    DealStatus,
    DealUpdate,
)
from crm.deps import ActorDep, SettingsDep
from crm.fields import DealIdPath
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

router = GatedRouter(prefix="/deals", tags=["deals"], route_class=TypedRoute)


def _answer(deal: object, stage: object, status: int = 200) -> ModelResponse[DealRead]:
    body = DealRead.of(deal, stage)
    headers = {"ETag": etag_for(body.version)}
    if status == 201:
        headers["Location"] = f"/v1/deals/{body.id}"
    return json_response(body, status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Create a deal",
    description="A deal for a customer, in a pipeline (the default one if omitted) and stage (the first if omitted). "
    "Its owner defaults to the customer's owner. The creation is the first entry of the deal's stage history and is "
    "announced as `deal.stage_changed` (from no stage); the customer becomes an `opportunity` if they were earlier "
    "in their lifecycle. Unknown `customer_id`/`pipeline_id`/`stage`: 422. Needs `write`.",
    responses=problem_responses(401, 403, 422),
)
async def create_deal(
    body: DealCreate, session: SessionDep, idem: IdempotencyDep, actor: ActorDep, settings: SettingsDep
) -> ModelResponse[DealRead]:
    async def operation() -> ModelResponse[DealRead]:
        await note_author(session, actor, "deal")  # a deal may move its customer's lifecycle stage
        deal, stage = await service.create_deal(session, body, actor, settings.default_currency)
        return _answer(deal, stage, 201)

    return await idem.execute(session, operation)


async def deal_filters(
    session: SessionDep,
    changed: ChangedDep,
    customer_id: uuid.UUID | None = None,
    pipeline_id: uuid.UUID | None = None,
    stage: Annotated[
        QueryText | None, Query(min_length=1, max_length=100, description="A stage name; needs `pipeline_id`.")
    ] = None,
    status: DealStatus | None = None,
    owner: Annotated[QueryText | None, Query(min_length=1, max_length=200)] = None,
) -> DealFilters:
    """The filters of the deal list, read from the query (the export takes the same)."""
    stage_id = await service.stage_id_for_filter(session, pipeline_id, stage) if stage is not None else None
    return DealFilters(
        customer_id=customer_id, pipeline_id=pipeline_id, stage_id=stage_id, status=status, owner=owner, changed=changed
    )


FiltersDep = Annotated[DealFilters, Depends(deal_filters)]
SortParam = Annotated[str, Query(pattern=keyset.sort_pattern(SORT_KEYS), description="Sort key, `-` for descending.")]
EXPORT_COLUMNS = tuple(DealRead.model_fields)
EXPORT_EXAMPLE = (
    ",".join(EXPORT_COLUMNS)
    + "\r\n"
    + ",".join(
        "" if READ_EXAMPLE.get(name) is None else str(READ_EXAMPLE[name]).replace("Z", "+00:00") for name in EXPORT_COLUMNS
    )
    + "\r\n"
)


@router.get(
    "",
    summary="List deals",
    description="Filter by `customer_id`, `pipeline_id`, `stage` (a stage name; needs `pipeline_id`), `status`, `owner`. "
    "`sort`: `created_at`, `updated_at`, `amount` or `expected_close_date`, `-` for descending (default "
    f"`-created_at`); deals without the sorted value come last. {SYNC_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_deals(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    filters: FiltersDep,
    sort: SortParam = "-created_at",
) -> ModelResponse[DealPage]:
    rows, cursor = await service.list_deals(session, filters, sort, page)
    return json_response(DealPage(items=[DealRead.of(d, s) for d, s in rows], next_cursor=cursor))


@router.get(
    "/export",
    status_code=200,
    summary="Export deals as CSV",
    description="Every deal the list shows with the same filters (`customer_id`, `pipeline_id`, `stage`, `status`, "
    "`owner`, the `updated_*` window) and in the same order (`sort`), unpaged, as a streamed `text/csv` attachment "
    "(`deals-<UTC timestamp>.csv`): a header row, then one line per deal with the fields of a deal read (amounts and "
    "probabilities as numbers). Spreadsheet-safe: a text cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage "
    "return gets a leading `'`. Constant memory whatever the number of deals. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The deals, one per line after the header.", EXPORT_EXAMPLE) | problem_responses(401, 403, 422),
)
async def export_deals(pool: PgPoolDep, _: Reader, filters: FiltersDep, sort: SortParam = "-created_at") -> Response:
    query = service.export_query(filters, sort, EXPORT_COLUMNS)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_COLUMNS, row_of=list, name="deals")


only_these_methods(router, "/export")


@router.get(
    "/{deal_id}",
    summary="Get a deal",
    description="One deal with its stage name, the stage's probability and its `ETag` (renaming its stage or "
    f"changing the stage's probability gives it a new one too). {NOT_MODIFIED_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_deal(deal_id: DealIdPath, request: Request, session: SessionDep, _: Reader) -> ModelResponse[DealRead] | Response:
    deal, stage = await service.get_deal(session, deal_id)
    return unchanged(request, deal.version) or _answer(deal, stage)


@router.patch(
    "/{deal_id}",
    summary="Change or move a deal",
    description="Change fields, or move the deal with `stage` (a name) or `status` (`won`/`lost` go to the pipeline's "
    "won/lost stage; a lost deal needs a `lost_reason`). Each move is appended to the history (who, when, from, to) "
    "and announced as `deal.stage_changed`; a won deal makes its customer a `customer`. Honours `If-Match`. "
    "Needs `write`.",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def update_deal(
    deal_id: DealIdPath, body: DealUpdate, session: SessionDep, idem: IdempotencyDep, actor: ActorDep, if_match: IfMatch = None
) -> ModelResponse[DealRead]:
    async def operation() -> ModelResponse[DealRead]:
        await note_author(session, actor, "deal")
        deal, stage = await service.update_deal(session, deal_id, body, if_match, actor)
        return _answer(deal, stage)

    return await idem.execute(session, operation)


@router.delete(
    "/{deal_id}",
    status_code=204,
    summary="Delete a deal",
    description="Deletes the deal and its history; its tasks and documents stay with the customer. Honours `If-Match`. "
    "Needs `write`.",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def delete_deal(deal_id: DealIdPath, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None) -> Response:
    async def operation() -> Response:
        await service.delete_deal(session, deal_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)


@router.get(
    "/{deal_id}/history",
    summary="A deal's stage history",
    description="Every move of the deal in order, oldest first (append-only: who, when, from, to, the amount then). "
    "Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def deal_history(
    deal_id: DealIdPath, session: SessionDep, _: Reader, page: Annotated[PageParams, Depends(page_params)]
) -> ModelResponse[DealHistoryPage]:
    rows, cursor = await service.deal_history(session, deal_id, page)
    return json_response(DealHistoryPage(items=[DealStageChangeRead.model_validate(r) for r in rows], next_cursor=cursor))
