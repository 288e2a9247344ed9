"""/v1/followups: the closed loop's inbox."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Depends, Query
from starlette.responses import Response

from cem.fields import From, To, check_window
from cem.followups import service
from cem.followups.repository import DEFAULT_SORT, EXPORT_HEADER, SORT_KEYS, FollowupFilters
from cem.followups.schemas import FollowupItem
from cxkit import keyset
from cxkit.fields import QueryText
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.csv_export import CsvExport, csv_export, csv_response_doc
from cxkit.http.deps import PgPoolDep, SessionDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.params import id_path
from cxkit.http.problems import only_these_methods, problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/followups", tags=["follow-ups"], route_class=TypedRoute)
FollowupId = Annotated[uuid.UUID, id_path("follow-up", "5b7d9f1a-3c5e-4a7b-9d1f-3a5c7e9b1d3f")]


async def followup_filters(
    status: Annotated[
        Literal["open", "closed", "cancelled"] | None,
        Query(description="Only open, only closed or only cancelled ones (cancelled: the customer was erased while open)."),
    ] = None,
    overdue: Annotated[
        bool | None,
        Query(description="true: only open ones past their due time now; false: all but those.", examples=[True]),
    ] = None,
    survey_id: Annotated[uuid.UUID | None, Query(description="Only those from this survey's answers.")] = None,
    customer_id: Annotated[uuid.UUID | None, Query(description="Only this customer's.")] = None,
    touchpoint: Annotated[
        QueryText | None, Query(max_length=100, description="Only answers about this touchpoint (key).")
    ] = None,
    metric: Annotated[Literal["nps", "csat", "ces"] | None, Query(description="Only answers of this metric.")] = None,
    since: From = None,
    until: To = None,
) -> FollowupFilters:
    check_window(since, until)
    return FollowupFilters(
        status=status,
        overdue=overdue,
        survey_id=survey_id,
        customer_id=customer_id,
        touchpoint=touchpoint,
        metric=metric,
        since=since,
        until=until,
    )


SortParam = Annotated[
    str,
    Query(
        pattern=keyset.sort_pattern(SORT_KEYS),
        description="Sort key, `-` for descending: `-created_at` newest first (the default), `due_at` the most urgent "
        "first (the soonest due; those without an SLA last).",
        examples=["due_at"],
    ),
]


@router.get(
    "",
    summary="List follow-ups",
    description="The closed loop's inbox: every follow-up a detractor answer opened (NPS 0-6, CSAT 1-2, CES 1-2 "
    "from a known customer; the CRM makes a task of each), with the customer's name and email, its score, reason, "
    "SLA (`due_at`), whether it is "
    "`overdue` now, and who closed it when the CRM task was done. Newest first, or the most urgent first with "
    "`sort=due_at` (`status=open&sort=due_at` is the queue to work through); filter by `status`, `overdue`, "
    "`survey_id`, `customer_id`, `touchpoint`, `metric` and a window on when it was opened (`from` inclusive, `to` "
    "exclusive); paginated with `limit` and `cursor`. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_followups(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    filters: Annotated[FollowupFilters, Depends(followup_filters)],
    sort: SortParam = DEFAULT_SORT,
) -> ModelResponse[Page[FollowupItem]]:
    items, next_cursor = await service.list_followups(session, filters, sort, page)
    return json_response(Page[FollowupItem](items=items, next_cursor=next_cursor))


EXPORT_EXAMPLE = (
    ",".join(EXPORT_HEADER)
    + "\r\n"
    + "5b7d9f1a-3c5e-4a7b-9d1f-3a5c7e9b1d3f,2026-12-05T09:30:00+00:00,0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10,"
    + "Ada Lovelace,ada@example.com,"
    + "7e9a1c3e-5a7c-4e9a-8c1e-3a5c7e9a1c3e,2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c,nps,3,checkout,"
    + "NPS 3 on 0-10 (detractor) in survey 'Checkout NPS',open,2026-12-06T09:30:00+00:00,true,,,,\r\n"
)


@router.get(
    "/export",
    status_code=200,
    summary="Export follow-ups as CSV",
    description="Every follow-up the list shows with the same filters (`status`, `overdue`, `survey_id`, "
    "`customer_id`, `touchpoint`, `metric`, `from`, `to`) and in the same order (`sort`), unpaged, as a streamed `text/csv` "
    "attachment (`followups-<UTC timestamp>.csv`): a header row, then one line per follow-up with the fields the "
    "list shows (the customer's name and email, `overdue` as true or false, judged when the export starts). "
    "Spreadsheet-safe: a text cell "
    "beginning with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`; numbers are left as numbers. "
    "Constant memory whatever the number of follow-ups. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The follow-ups, one per line after the header.", EXPORT_EXAMPLE)
    | problem_responses(401, 403, 422),
)
async def export_followups(
    pool: PgPoolDep, _: Reader, filters: Annotated[FollowupFilters, Depends(followup_filters)], sort: SortParam = DEFAULT_SORT
) -> Response:
    query = service.export_query(filters, sort)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_HEADER, row_of=list, name="followups")


only_these_methods(router, "/export")


@router.get(
    "/{followup_id}",
    summary="Get a follow-up",
    description="One follow-up, as the list shows it. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_followup(followup_id: FollowupId, session: SessionDep, _: Reader) -> ModelResponse[FollowupItem]:
    return json_response(await service.get_followup(session, followup_id))
