"""/v1/interactions"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Query, Request
from starlette.responses import Response

from crm.fields import InteractionIdPath
from crm.interactions import service
from crm.interactions.repository import SORT_KEYS, InteractionFilters
from crm.interactions.schemas import READ_EXAMPLE, InteractionCreate, InteractionPage, InteractionRead
from cxkit import keyset
from cxkit.fields import QueryText, Timestamp
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.csv_export import CsvExport, csv_export, csv_response_doc
from cxkit.http.deps import PgPoolDep, SessionDep, pool_of
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.problems import field_problem, only_these_methods, problem_responses
from cxkit.http.routing import GatedRouter
from cxkit.kafka.outbox import wake_relay
from cxkit.pg_pool import RowInsert

router = GatedRouter(prefix="/interactions", tags=["interactions"], route_class=TypedRoute)


@router.post(
    "",
    status_code=201,
    summary="Record an interaction",
    description="Something the customer did or the company did with them (purchase, support_ticket_closed, call, email, "
    "meeting, bill_paid...). `customer_email` is resolved case-insensitively; an unknown email makes a lead-stage "
    "customer (announced as `customer.created`). The interaction is published on `cx.interactions.v1` as "
    "`interaction.recorded` (the CEM service invites to surveys from it). Unknown `customer_id`: 422. Needs `write`.",
    responses=problem_responses(401, 403, 422),
)
async def record_interaction(body: InteractionCreate, request: Request, idem: IdempotencyDep) -> ModelResponse[InteractionRead]:
    if body.customer_id is not None:
        # The common case (a known customer): one read, then the rows in one statement.
        async def prepare(conn: asyncpg.Connection) -> tuple[ModelResponse[InteractionRead], list[RowInsert]]:
            row, rows = await service.plan_interaction_for_id(conn, body)
            return _created(row), rows

        # Guarded: an erase or a merge of the customer meanwhile makes it read again.
        response = await idem.write_rows(pool_of(request), prepare, guard=service.guarded)
        wake_relay()
        return response

    # By email (it may create the customer): the ORM path, with a session of its own (the hot
    # path above opens none).
    async with request.app.state.session_factory() as session:

        async def operation() -> ModelResponse[InteractionRead]:
            return _created(await service.record_interaction(session, body))

        return await idem.execute(session, operation)


async def interaction_filters(
    customer_id: uuid.UUID | None = None,
    type: Annotated[QueryText | None, Query(min_length=1, max_length=100)] = None,
    channel: Annotated[QueryText | None, Query(min_length=1, max_length=100)] = None,
    touchpoint: Annotated[QueryText | None, Query(min_length=1, max_length=100)] = None,
    occurred_from: Annotated[Timestamp | None, Query(description="RFC 3339, inclusive.")] = None,
    occurred_to: Annotated[Timestamp | None, Query(description="RFC 3339, exclusive.")] = None,
) -> InteractionFilters:
    """The filters of the interaction list, read from the query (the export takes the same)."""
    if occurred_from and occurred_to and occurred_from >= occurred_to:
        raise field_problem(["query", "occurred_to"], "occurred_from must be before occurred_to")
    return InteractionFilters(
        customer_id=customer_id,
        type=type,
        channel=channel,
        touchpoint=touchpoint,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
    )


FiltersDep = Annotated[InteractionFilters, Depends(interaction_filters)]
SortParam = Annotated[str, Query(pattern=keyset.sort_pattern(SORT_KEYS), description="Sort key, `-` for descending.")]
EXPORT_COLUMNS = tuple(InteractionRead.model_fields)
EXPORT_EXAMPLE = (
    ",".join(EXPORT_COLUMNS)
    + "\r\n"
    + f"{READ_EXAMPLE['id']},{READ_EXAMPLE['customer_id']},purchase,web,checkout,2026-11-23T09:30:00+00:00,"
    + 'Order #10421: 2 items,129.90,EUR,"{""order_id"":""10421""}",api,2026-11-23T09:30:01+00:00\r\n'
)


@router.get(
    "",
    summary="List interactions",
    description="Newest first (`sort=occurred_at` for oldest first). Filter by `customer_id`, `type`, `channel`, "
    "`touchpoint` and a time window (`occurred_from` inclusive, `occurred_to` exclusive). Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_interactions(
    pool: PgPoolDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    filters: FiltersDep,
    sort: SortParam = "-occurred_at",
) -> ModelResponse[InteractionPage]:
    rows, cursor = await service.list_interactions(pool, filters, sort, page)
    # One validation for the page (a model built per row cost more than the query).
    return json_response(InteractionPage.model_validate({"items": [dict(r) for r in rows], "next_cursor": cursor}))


@router.get(
    "/export",
    status_code=200,
    summary="Export interactions as CSV",
    description="Every interaction the list shows with the same filters (`customer_id`, `type`, `channel`, "
    "`touchpoint`, the `occurred_*` window) and in the same order (`sort`), unpaged, as a streamed `text/csv` "
    "attachment (`interactions-<UTC timestamp>.csv`): a header row, then one line per interaction with the fields of "
    "an interaction read (`metadata` as compact JSON, amounts as numbers). Spreadsheet-safe: a text cell beginning "
    "with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`. Constant memory whatever the number of "
    "interactions. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The interactions, one per line after the header.", EXPORT_EXAMPLE)
    | problem_responses(401, 403, 422),
)
async def export_interactions(pool: PgPoolDep, _: Reader, filters: FiltersDep, sort: SortParam = "-occurred_at") -> Response:
    query = service.interactions_export(filters, sort, EXPORT_COLUMNS)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_COLUMNS, row_of=list, name="interactions")


only_these_methods(router, "/export")


@router.get(
    "/{interaction_id}",
    summary="Get an interaction",
    description="One interaction by id (its `interaction_id` on the event). Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_interaction(interaction_id: InteractionIdPath, session: SessionDep, _: Reader) -> ModelResponse[InteractionRead]:
    return json_response(InteractionRead.model_validate(await service.get_interaction(session, interaction_id)))


def _read(row: dict[str, Any]) -> InteractionRead:
    return InteractionRead.model_validate({**row, "metadata_": row["metadata"]})


def _created(row: dict[str, Any]) -> ModelResponse[InteractionRead]:
    return json_response(_read(row), 201, headers={"Location": f"/v1/interactions/{row['id']}"})
