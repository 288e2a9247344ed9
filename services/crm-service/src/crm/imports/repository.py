"""Every import-job query (plain asyncpg: the worker and the routes run them on the pool or on
their own connections), and the erasure of the refused rows (on the erasure's session)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers.csv_import import TAKEN_EMAIL, RowError
from crm.customers.lifecycle import CustomerErasure
from crm.customers.models import Customer, normalized_email
from crm.imports.models import ImportJobError

JOB_COLUMNS = (
    "id, status, filename, size_bytes, chunk_rows, total_rows, rows_read, created, skipped, failed, done_chunks, "
    "ignored_columns, error, created_by, created_at, started_at, finished_at, updated_at"
)
# A job being worked on holds this advisory lock (class, hashtext(id)) on the worker's
# connection: released by PostgreSQL when that connection or process dies, so another worker
# can tell a dead job from a live one without any timeout.
_LOCK_CLASS = 72_140_006
PART_BYTES = 1024 * 1024


async def insert_job(
    conn: asyncpg.Connection, job_id: uuid.UUID, *, filename: str | None, chunk_rows: int, created_by: str | None
) -> None:
    await conn.execute(
        "INSERT INTO import_jobs (id, status, filename, size_bytes, chunk_rows, rows_read, created, skipped, failed, "
        "done_chunks, created_by, created_at, updated_at) "
        "VALUES ($1, 'queued', $2, 0, $3, 0, 0, 0, 0, '{}', $4, now(), now())",
        job_id,
        filename,
        chunk_rows,
        created_by,
    )


async def add_part(conn: asyncpg.Connection, job_id: uuid.UUID, seq: int, data: bytes) -> None:
    await conn.execute("INSERT INTO import_job_parts (job_id, seq, data) VALUES ($1, $2, $3)", job_id, seq, data)
    await conn.execute("UPDATE import_jobs SET size_bytes = size_bytes + $2 WHERE id = $1", job_id, len(data))


async def read_job(db: asyncpg.Pool | asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {JOB_COLUMNS} FROM import_jobs WHERE id = $1", job_id)
    return dict(row) if row is not None else None


async def cancel_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any] | None:
    """Mark a queued or running job cancelled (a running one stops before its next chunk
    commits); the job as it is afterwards, None if it does not exist."""
    row = await conn.fetchrow(
        f"UPDATE import_jobs SET status = 'cancelled', finished_at = now(), updated_at = now() "
        f"WHERE id = $1 AND status IN ('queued', 'running') RETURNING {JOB_COLUMNS}",
        job_id,
    )
    if row is not None:
        await conn.execute("DELETE FROM import_job_parts WHERE job_id = $1", job_id)
        return dict(row)
    return await read_job(conn, job_id)


async def list_jobs(
    db: asyncpg.Pool | asyncpg.Connection,
    status: str | None,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to `limit` jobs, newest first (by created_at, then id), those with `status` only if
    given, after the (created_at, id) of `after`."""
    conditions, args = [], []
    if status is not None:
        args.append(status)
        conditions.append(f"status = ${len(args)}")
    if after is not None:
        args += list(after)
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    rows = await db.fetch(
        f"SELECT {JOB_COLUMNS} FROM import_jobs {where}ORDER BY created_at DESC, id DESC LIMIT ${len(args)}", *args
    )
    return [dict(r) for r in rows]


async def delete_finished_before(conn: asyncpg.Connection, cutoff: dt.datetime, limit: int) -> int:
    """Delete up to `limit` jobs that ended before `cutoff` (their refused rows go with them),
    the oldest first; how many were deleted."""
    rows = await conn.fetch(
        "DELETE FROM import_jobs WHERE id IN (SELECT id FROM import_jobs WHERE status IN ('succeeded', 'failed', "
        "'cancelled') AND finished_at < $1 ORDER BY finished_at LIMIT $2) RETURNING id",
        cutoff,
        limit,
    )
    return len(rows)


ERRORS_SQL = "SELECT line, email, reason FROM import_job_errors WHERE job_id = $1 ORDER BY line"


async def open_job_ids(conn: asyncpg.Connection) -> list[uuid.UUID]:
    """Queued and running jobs, oldest first."""
    rows = await conn.fetch("SELECT id FROM import_jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id")
    return [r[0] for r in rows]


async def try_lock(conn: asyncpg.Connection, job_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2::uuid::text))", _LOCK_CLASS, job_id))


async def unlock(conn: asyncpg.Connection, job_id: uuid.UUID) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2::uuid::text))", _LOCK_CLASS, job_id)


async def start_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> asyncpg.Record | None:
    """Mark the job running (again, for one resumed); None if it is no longer open."""
    return await conn.fetchrow(
        "UPDATE import_jobs SET status = 'running', started_at = coalesce(started_at, now()), updated_at = now() "
        "WHERE id = $1 AND status IN ('queued', 'running') RETURNING chunk_rows, done_chunks",
        job_id,
    )


async def parts(conn: asyncpg.Connection, job_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The uploaded file's parts in order, one query each (a part is at most ~1 MiB)."""
    seq = -1
    while True:
        row = await conn.fetchrow(
            "SELECT seq, data FROM import_job_parts WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT 1", job_id, seq
        )
        if row is None:
            return
        seq = row["seq"]
        yield row["data"]


async def set_total(conn: asyncpg.Connection, job_id: uuid.UUID, total_rows: int) -> None:
    await conn.execute("UPDATE import_jobs SET total_rows = $2, updated_at = now() WHERE id = $1", job_id, total_rows)


async def record_chunk(
    conn: asyncpg.Connection, job_id: uuid.UUID, index: int, rows: int, created: int, errors: Sequence[RowError]
) -> bool:
    """Add a committed chunk's counts and refused rows to the job, in the chunk's transaction.
    False (nothing written) when the job is no longer running: it was cancelled."""
    skipped = sum(1 for e in errors if e.existing)
    done = await conn.fetchval(
        "UPDATE import_jobs SET rows_read = rows_read + $3, created = created + $4, skipped = skipped + $5, "
        "failed = failed + $6, done_chunks = array_append(done_chunks, $2), updated_at = now() "
        "WHERE id = $1 AND status = 'running' RETURNING true",
        job_id,
        index,
        rows,
        created,
        skipped,
        len(errors) - skipped,
    )
    if not done:
        return False
    if errors:
        await conn.copy_records_to_table(
            "import_job_errors",
            records=[(job_id, e.line, e.email, e.reason, e.key) for e in errors],
            columns=("job_id", "line", "email", "reason", "address_key"),
        )
    return True


async def finish_job(
    conn: asyncpg.Connection, job_id: uuid.UUID, status: str, *, error: str | None = None, ignored_columns: str | None = None
) -> None:
    """A running job ends (succeeded or failed); its stored upload is dropped."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE import_jobs SET status = $2, error = $3, ignored_columns = coalesce($4, ignored_columns), "
            "finished_at = now(), updated_at = now() WHERE id = $1 AND status = 'running'",
            job_id,
            status,
            error,
            ignored_columns,
        )
        await conn.execute("DELETE FROM import_job_parts WHERE job_id = $1", job_id)


# What an erasure leaves of a refused row's reason: a taken email's without the address, any
# other with the address as written replaced (no reason the import gives holds it, but a row's
# reason is stored for as long as the job is kept).
ERASED_TAKEN_EMAIL = "a customer with this email already exists (the address was erased)"
ERASED_ADDRESS = "[erased]"


class ImportErrorRepository:
    """The refused rows as customer data (`crm.customer_data`). A row names no customer, only
    the address written in it: it is personal data of whoever holds that address, found by the
    address's key (`ImportJobError.address_key`), whatever the reason the row was refused for and
    the state of its job.

    Not reached: a row refused by a chunk whose transaction commits after the erasure (the row
    was not visible to it), and one a job still running refuses later, invalid or repeated in the
    file, with the erased address (a new upload of it: not erased, as a customer created since
    with the address is not). They go with their job, `CRM_IMPORTS_RETENTION_DAYS` after it ends."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        """Nothing to move: the rows are found by address, and a row's address stays what it was."""

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """The rows written with the customer's address lose it: their email, its key and the
        address in their reason. Line, reason and counts stay, so the job still adds up. Looks the
        address up on the customer's record, which the erasure clears after visiting the domains;
        a merged duplicate's key was freed at the merge, so it is made again from its email."""
        found = await self.session.execute(
            select(Customer.email, Customer.email_normalized).where(Customer.id == erasure.customer_id)
        )
        customer = found.one_or_none()
        if customer is None:
            return
        keys = {key for key in (customer.email_normalized, customer.email and normalized_email(customer.email)) if key}
        if not keys:
            return
        row = ImportJobError
        reason = case(
            (func.starts_with(row.reason, TAKEN_EMAIL), ERASED_TAKEN_EMAIL),
            (func.strpos(row.reason, row.email) > 0, func.replace(row.reason, row.email, ERASED_ADDRESS)),
            else_=row.reason,
        )
        await self.session.execute(
            update(row)
            .where(row.address_key.in_(sorted(keys)))
            .values(email=None, address_key=None, reason=reason)
            .execution_options(synchronize_session=False)
        )
