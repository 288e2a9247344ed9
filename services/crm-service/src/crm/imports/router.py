"""/v1/imports: customer CSV imports as background jobs."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from crm.deps import SettingsDep
from crm.documents.upload import receive_upload
from crm.fields import EXAMPLE_IDS
from crm.imports import repository, service
from crm.imports.schemas import ImportPage, ImportRead, ImportStatus
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader, Writer
from cxkit.http.csv_export import CsvExport, csv_export, csv_response_doc
from cxkit.http.deps import PgPoolDep
from cxkit.http.idempotency import IdempotencyDep, idempotency_of
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter
from cxkit.pg_pool import RowInsert

router = GatedRouter(prefix="/imports", tags=["imports"], route_class=TypedRoute)

ImportIdPath = Annotated[uuid.UUID, PathParam(description="The import's id.", examples=[EXAMPLE_IDS["import"]])]
CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/vnd.ms-excel")
UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "minLength": 1,
            "description": "The CSV (UTF-8, a header row first): email and name required; phone, company, "
            "lifecycle_stage, owner, source, campaign_id, external_id, survey_opt_out (true/false), tags (separated "
            "by ; or |) and attributes.<key> columns optional.",
        }
    },
}
ERRORS_HEADER = ("line", "email", "reason")
ERRORS_EXAMPLE = (
    "line,email,reason\r\n3,not-an-email,email: value is not a valid email address: An email address must have an @-sign."
    "\r\n6,taken@example.com,a customer with email taken@example.com already exists\r\n"
)


def _answer(job: dict[str, Any], status: int = 200) -> ModelResponse[ImportRead]:
    body = ImportRead.of(job)
    headers = {"Location": f"/v1/imports/{body.id}"} if status == 202 else None
    return json_response(body, status, headers=headers)


@router.post(
    "",
    status_code=202,
    summary="Start a customer import",
    description="`multipart/form-data` with a `file` part: a customer CSV, the columns of `crm import-customers`. "
    "The file is stored with the job (in the database, so any replica can run it and a restart resumes it) and "
    "the answer is 202 at once, with the job (`queued`) and its `Location`; a worker in the service then imports it "
    "in chunks: each valid row creates a customer announced by `customer.created`, exactly as `POST /v1/customers`; "
    "a row whose email or external_id is taken is `skipped`, an invalid one (or one repeating an earlier row's email "
    "or external_id in the file, or naming an unknown campaign) `failed`; both are listed by "
    "`GET /v1/imports/{id}/errors`. A file over the configured limit is refused with 413 as soon as it passes it. "
    "`Idempotency-Key` works as for every write (compared on the file's content). Needs `write`.",
    responses=problem_responses(401, 403, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": UPLOAD_SCHEMA,
                    "example": {"file": "(binary)"},
                    "encoding": {"file": {"contentType": ", ".join(CSV_TYPES)}},
                }
            },
        }
    },
)
async def start_import(
    request: Request,
    pool: PgPoolDep,
    principal: Writer,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", max_length=255, description="A retry with the same key and file returns the first answer."
        ),
    ] = None,
) -> ModelResponse[ImportRead]:
    handle, name = tempfile.mkstemp(prefix="crm-upload-", suffix=".csv")
    os.close(handle)
    incoming = Path(name)
    try:
        upload = await receive_upload(request, incoming, settings.imports_max_bytes, list(CSV_TYPES), what="import file")
        idem = idempotency_of(request, idempotency_key, principal, upload.request_digest)

        async def prepare(conn: asyncpg.Connection) -> tuple[ModelResponse[ImportRead], list[RowInsert]]:
            job = await service.create_job(
                conn, incoming, filename=upload.filename, chunk_rows=settings.imports_chunk_rows, created_by=principal.name
            )
            return _answer(job, 202), []

        response = await idem.write_locked(pool, prepare)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(incoming)
    worker = getattr(request.app.state, "import_worker", None)
    if worker is not None:
        worker.wake()
    return response


@router.get(
    "",
    summary="List imports",
    description="The import jobs, newest first, with their status and counts as `GET /v1/imports/{id}` gives them; "
    "`status` keeps those in one state (e.g. `running`). A job that ended is kept `CRM_IMPORTS_RETENTION_DAYS` "
    "(30) days, with its refused rows. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_imports(
    pool: PgPoolDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    status: Annotated[ImportStatus | None, Query(description="Only jobs in this state.")] = None,
) -> ModelResponse[ImportPage]:
    jobs, cursor = await service.list_jobs(pool, status, page)
    return json_response(ImportPage(items=[ImportRead.of(job) for job in jobs], next_cursor=cursor))


@router.get(
    "/{import_id}",
    summary="Get an import's status and counts",
    description="`status` (queued, running, succeeded, failed, cancelled), `progress` (0 to 1) and the counts of "
    "committed rows: `rows_read` = `created` + `skipped` + `failed`. A job is committed in chunks: after a restart "
    "of the service, a running job resumes after its last committed chunk. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_import(import_id: ImportIdPath, pool: PgPoolDep, _: Reader) -> ModelResponse[ImportRead]:
    return _answer(await service.get_job(pool, import_id))


@router.get(
    "/{import_id}/errors",
    status_code=200,
    summary="The rows an import did not create, as CSV",
    description="Every skipped or failed row committed so far, in file order, as a streamed `text/csv` attachment: "
    "`line` (in the file, the header being line 1), `email` (as written) and `reason`. Needs `read`.",
    response_class=CsvExport,
    responses=csv_response_doc("One line per row not imported, after the header.", ERRORS_EXAMPLE)
    | problem_responses(401, 403, 404, 422),
)
async def import_errors(import_id: ImportIdPath, pool: PgPoolDep, _: Reader) -> Response:
    await service.get_job(pool, import_id)
    return await csv_export(pool, repository.ERRORS_SQL, [import_id], header=ERRORS_HEADER, row_of=list, name="import-errors")


@router.post(
    "/{import_id}/cancel",
    summary="Cancel an import",
    description="A queued job never starts; a running one stops before its next chunk commits (the chunk being "
    "written is undone). Customers of chunks committed before stay, and stay counted. Answers the job, "
    "`cancelled`; cancelling again changes nothing; a job that already succeeded or failed: 409. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def cancel_import(import_id: ImportIdPath, pool: PgPoolDep, idem: IdempotencyDep) -> ModelResponse[ImportRead]:
    async def prepare(conn: asyncpg.Connection) -> tuple[ModelResponse[ImportRead], list[RowInsert]]:
        return _answer(await service.cancel_job(conn, import_id)), []

    return await idem.write_locked(pool, prepare)
