"""/v1/tasks"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from crm.deps import ActorDep
from crm.fields import EXAMPLE_IDS, TaskIdPath
from crm.tasks import service
from crm.tasks.repository import SORT_KEYS, TaskFilters
from crm.tasks.schemas import TaskCreate, TaskPage, TaskRead, TaskStatus, TaskUpdate
from cxkit import keyset
from cxkit.fields import QueryText, Timestamp
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

router = GatedRouter(prefix="/tasks", tags=["tasks"], route_class=TypedRoute)


def _answer(task: object, status: int = 200) -> ModelResponse[TaskRead]:
    body = TaskRead.model_validate(task)
    headers = {"ETag": etag_for(body.version)}
    if status == 201:
        headers["Location"] = f"/v1/tasks/{body.id}"
    return json_response(body, status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Create a task",
    description="A follow-up for a customer (or for a deal, whose customer it then belongs to), with a due time, a "
    "priority and an owner (default: the customer's owner). `origin`/`origin_ref` say where it came from (e.g. "
    "`followup` and the CEM follow-up id; tasks for CEM follow-up requests are made this way automatically) and "
    "travel on `task.completed`. There is at most one `followup` task per follow-up id (409 otherwise). Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_task(body: TaskCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[TaskRead]:
    async def operation() -> ModelResponse[TaskRead]:
        return _answer(await service.create_task(session, body), 201)

    return await idem.execute(session, operation)


async def task_filters(
    changed: ChangedDep,
    customer_id: uuid.UUID | None = None,
    deal_id: uuid.UUID | None = None,
    owner: Annotated[QueryText | None, Query(min_length=1, max_length=200)] = None,
    status: TaskStatus | None = None,
    origin: Annotated[QueryText | None, Query(min_length=1, max_length=100)] = None,
    origin_ref: Annotated[QueryText | None, Query(min_length=1, max_length=255)] = None,
    due_before: Annotated[Timestamp | None, Query(description="RFC 3339, exclusive.")] = None,
) -> TaskFilters:
    """The filters of the task list, read from the query (the export takes the same)."""
    return TaskFilters(
        customer_id=customer_id,
        deal_id=deal_id,
        owner=owner,
        status=status,
        origin=origin,
        origin_ref=origin_ref,
        due_before=due_before,
        changed=changed,
    )


FiltersDep = Annotated[TaskFilters, Depends(task_filters)]
SortParam = Annotated[str, Query(pattern=keyset.sort_pattern(SORT_KEYS), description="Sort key, `-` for descending.")]
EXPORT_COLUMNS = tuple(TaskRead.model_fields)
EXPORT_EXAMPLE = (
    ",".join(EXPORT_COLUMNS)
    + "\r\n"
    + f"{EXAMPLE_IDS['task']},{EXAMPLE_IDS['customer']},,Call back about the delivery,,2026-11-24T09:00:00+00:00,open,"
    + "high,sam@yourcompany.example,manual,,,,,,1,2026-11-23T10:00:00+00:00,2026-11-23T10:00:00+00:00\r\n"
)


@router.get(
    "",
    summary="List tasks",
    description="Most urgent first by default (`sort=due_at`; tasks without a due time last; `created_at`, `-` "
    "and `updated_at` also work). Filter by `customer_id`, `deal_id`, `owner`, `status`, `origin`, `origin_ref`, and "
    f"`due_before` (with `status=open`: the overdue list). {SYNC_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_tasks(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    filters: FiltersDep,
    sort: SortParam = "due_at",
) -> ModelResponse[TaskPage]:
    rows, cursor = await service.list_tasks(session, filters, sort, page)
    return json_response(TaskPage(items=[TaskRead.model_validate(t) for t in rows], next_cursor=cursor))


@router.get(
    "/export",
    status_code=200,
    summary="Export tasks as CSV",
    description="Every task the list shows with the same filters (`customer_id`, `deal_id`, `owner`, `status`, "
    "`origin`, `origin_ref`, `due_before`, the `updated_*` window) and in the same order (`sort`), unpaged, as a "
    "streamed `text/csv` attachment (`tasks-<UTC timestamp>.csv`): a header row, then one line per task with the "
    "fields of a task read. Spreadsheet-safe: a text cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage "
    "return gets a leading `'`. Constant memory whatever the number of tasks. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("The tasks, one per line after the header.", EXPORT_EXAMPLE) | problem_responses(401, 403, 422),
)
async def export_tasks(pool: PgPoolDep, _: Reader, filters: FiltersDep, sort: SortParam = "due_at") -> Response:
    query = service.export_query(filters, sort, EXPORT_COLUMNS)
    return await csv_export(pool, query.sql, query.arguments(), header=EXPORT_COLUMNS, row_of=list, name="tasks")


only_these_methods(router, "/export")


@router.get(
    "/{task_id}",
    summary="Get a task",
    description=f"One task with its `ETag`. {NOT_MODIFIED_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_task(task_id: TaskIdPath, request: Request, session: SessionDep, _: Reader) -> ModelResponse[TaskRead] | Response:
    task = await service.get_task(session, task_id)
    return unchanged(request, task.version) or _answer(task)


@router.patch(
    "/{task_id}",
    summary="Change, complete or reopen a task",
    description="Change its details; `status: completed` completes it (who and when are recorded, and `task.completed` is "
    "announced with its origin, so the CEM can count the follow-up as done), `open` reopens it, `cancelled` drops it. "
    "Completing a completed task changes nothing. Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def update_task(
    task_id: TaskIdPath, body: TaskUpdate, session: SessionDep, idem: IdempotencyDep, actor: ActorDep, if_match: IfMatch = None
) -> ModelResponse[TaskRead]:
    async def operation() -> ModelResponse[TaskRead]:
        return _answer(await service.update_task(session, task_id, body, if_match, actor))

    return await idem.execute(session, operation)


@router.delete(
    "/{task_id}",
    status_code=204,
    summary="Delete a task",
    description="Removes the task for good (cancel it instead to keep the record). Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def delete_task(task_id: TaskIdPath, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None) -> Response:
    async def operation() -> Response:
        await service.delete_task(session, task_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)
