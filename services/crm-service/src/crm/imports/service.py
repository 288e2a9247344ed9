"""Import jobs: store an uploaded customer CSV as a queued job, read its state, cancel it.
The rows themselves are imported by `crm.imports.worker` in the background."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from crm.imports import repository
from cxkit import keyset
from cxkit.db import new_id
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound
from cxkit.keyset import Kind


async def create_job(
    conn: asyncpg.Connection, upload: Path, *, filename: str | None, chunk_rows: int, created_by: str | None
) -> dict[str, Any]:
    """A queued job holding the uploaded file (in parts of at most 1 MiB), inside the caller's
    transaction. Returns the job."""
    job_id = new_id()
    await repository.insert_job(conn, job_id, filename=filename, chunk_rows=chunk_rows, created_by=created_by)
    seq = 0
    async with await anyio.open_file(upload, "rb") as source:
        while part := await source.read(repository.PART_BYTES):
            await repository.add_part(conn, job_id, seq, part)
            seq += 1
    job = await repository.read_job(conn, job_id)
    assert job is not None
    return job


async def get_job(db: asyncpg.Pool | asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    job = await repository.read_job(db, job_id)
    if job is None:
        raise NotFound(f"import {job_id} does not exist")
    return job


_CURSOR_KINDS: tuple[Kind, Kind] = ("datetime", "uuid")


async def list_jobs(
    db: asyncpg.Pool | asyncpg.Connection, status: str | None, page: PageParams
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of jobs, newest first, and the cursor of the next (None on the last)."""
    rows = await repository.list_jobs(db, status, keyset.read_cursor(page, _CURSOR_KINDS), page.limit + 1)
    return keyset.trim(rows, page.limit, _CURSOR_KINDS, lambda job: (job["created_at"], job["id"]))


async def cancel_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    """Cancel a queued or running job: nothing more is imported (the chunk being written is
    undone; chunks committed before stay, and stay counted). Cancelling a cancelled job changes
    nothing; a job that already ended otherwise is a 409."""
    job = await repository.cancel_job(conn, job_id)
    if job is None:
        raise NotFound(f"import {job_id} does not exist")
    if job["status"] != "cancelled":
        raise Conflict(f"import {job_id} already ended ({job['status']})")
    return job
