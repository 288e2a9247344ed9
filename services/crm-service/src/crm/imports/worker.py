"""The background worker that runs import jobs inside the service.

It polls for queued jobs (and is woken when one is uploaded), takes one under an advisory lock
(see `repository.try_lock`), copies the stored upload to a local temporary file and runs the
same engine as `crm import-customers` over it (`crm.customers.csv_import`), on its own thread
and event loop, so the service's requests keep being answered while the rows are validated.

Every chunk of `chunk_rows` rows commits together with the job's counts, its refused rows and
its number (`done_chunks`). A job left `running` by a process that died or stopped (its lock
is free) is taken again and resumed: the committed chunks are not written again (their rows
still count as seen, so a later repeat is still a duplicate), the others done, so no customer
and no event is made twice and the counts are those of an unbroken run. A run cut short by the
database (busy, or away) is resumed the same way; a job whose runs end in any other error
`ATTEMPTS_PER_JOB` times in a row is marked failed with it, so the jobs behind it still run.

Once an hour it deletes the jobs that ended more than `CRM_IMPORTS_RETENTION_DAYS` ago, with
their refused rows. When it starts, and then hourly, it deletes the local copies of uploads that a
process which died mid-job left behind (`remove_abandoned_copies`): its resumed job makes a new one."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

try:  # POSIX: a live worker's lock on its copy of the upload (see remove_abandoned_copies)
    import fcntl
except ImportError:  # pragma: no cover - Windows: copies a dead process left are not looked for
    fcntl = None  # type: ignore[assignment]

from crm.customers.csv_import import ChunkResult, ImportFileError, count_rows, import_customers
from crm.imports import repository
from cxkit.db import is_database_busy, is_database_unavailable
from cxkit.pg_pool import asyncpg_dsn

log = logging.getLogger(__name__)
# Finished jobs past the retention are looked for this often, and deleted this many at a time
# (each takes its refused rows with it, up to a file's every row).
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 20
# Each job reads a local copy of its upload, named so; a copy older than STALE_COPY_S that no live
# worker holds was left by a process that died mid-job (see remove_abandoned_copies).
COPY_PREFIX, COPY_SUFFIX = "crm-import-", ".csv"
STALE_COPY_S = 60.0
# A job whose run fails this many times in a row with an error that is not the database's
# (busy or away) is marked failed with it, so one job cannot hold the queue for good.
ATTEMPTS_PER_JOB = 3


class _Stopped(Exception):
    """The chunk is not committed: the job was cancelled, or the worker is stopping."""


class ImportWorker:
    def __init__(
        self,
        database_url: str,
        *,
        writers: int = 2,
        poll_seconds: float = 2.0,
        retention_days: int = 30,
        temp_dir: str | None = None,
    ) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.writers = writers
        self.poll_seconds = poll_seconds
        self.retention = dt.timedelta(days=retention_days)
        self.temp_dir = temp_dir
        self._pruned_at = -float("inf")
        self._failed_runs: dict[uuid.UUID, int] = {}  # job id -> runs in a row that ended in an error
        self._wake = asyncio.Event()
        self._stopping = threading.Event()

    def wake(self) -> None:
        """A job was just queued: look at once."""
        self._wake.set()

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, server_settings={"application_name": "crm-imports", "jit": "off"})

    async def run(self) -> None:
        """Poll until stopped, on one connection held from pass to pass (opened again after a
        failure). A connection per pass, every `poll_seconds`, cost the service's event loop
        about 1.4 ms of CPU and PostgreSQL a new backend each time, idle or not."""
        conn: asyncpg.Connection | None = None
        await self._remove_abandoned_copies()
        try:
            while not self._stopping.is_set():
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._connect()
                    if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                        await self.prune(conn)
                        await self._remove_abandoned_copies()
                    while await self.run_once(conn):
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database away: try again later, on a new connection
                    log.warning("import worker pass failed", extra={"error": repr(exc)})
                    conn = await _closed(conn)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                self._wake.clear()
        finally:
            await _closed(conn)

    async def _remove_abandoned_copies(self) -> None:
        try:
            removed = await asyncio.to_thread(remove_abandoned_copies, self.temp_dir)
        except OSError as exc:  # the directory unreadable: the jobs themselves still run
            log.warning("could not look for abandoned import copies", extra={"error": repr(exc)})
            return
        if removed:
            log.info("removed import copies left by a process that died mid-job", extra={"count": removed})

    @contextlib.asynccontextmanager
    async def _using(self, conn: asyncpg.Connection | None) -> AsyncIterator[asyncpg.Connection]:
        """`conn`, or a connection of its own for the call, closed after it."""
        if conn is not None:
            yield conn
            return
        own = await self._connect()
        try:
            yield own
        finally:
            await _closed(own)

    async def prune(self, conn: asyncpg.Connection | None = None) -> int:
        """Delete the jobs that ended more than the retention ago (with their refused rows), in
        batches; how many. On `conn`, or on a connection of its own."""
        self._pruned_at = time.monotonic()
        async with self._using(conn) as db:
            cutoff = dt.datetime.now(dt.UTC) - self.retention
            deleted = 0
            while batch := await repository.delete_finished_before(db, cutoff, PRUNE_BATCH):
                deleted += batch
                if batch < PRUNE_BATCH or self._stopping.is_set():
                    break
            return deleted

    async def run_once(self, conn: asyncpg.Connection | None = None) -> bool:
        """Take one open job nobody is working on and run it to its end (or until the worker
        stops). Returns whether there was one. The job's lock is held on `conn` (or on a
        connection of its own) while it runs."""
        async with self._using(conn) as lock_conn:
            for job_id in await repository.open_job_ids(lock_conn):
                if self._stopping.is_set():
                    return False
                if not await repository.try_lock(lock_conn, job_id):
                    continue  # another worker has it
                try:
                    start = await repository.start_job(lock_conn, job_id)
                    if start is None:
                        continue  # finished or cancelled meanwhile
                    # The rows are validated on a thread of their own, with its own loop and
                    # connections: the service's loop stays free for requests.
                    try:
                        await asyncio.to_thread(
                            asyncio.run, self._process(job_id, start["chunk_rows"], frozenset(start["done_chunks"]))
                        )
                    except Exception as exc:
                        if not await self._gave_up(lock_conn, job_id, exc):
                            raise
                    self._failed_runs.pop(job_id, None)
                    return True
                finally:
                    await repository.unlock(lock_conn, job_id)
            return False

    async def _gave_up(self, conn: asyncpg.Connection, job_id: uuid.UUID, exc: Exception) -> bool:
        """After a run of the job ended in `exc`: whether the job is now marked failed. The
        database busy or away, or the worker stopping, never counts: the job is resumed later."""
        if self._stopping.is_set() or is_database_busy(exc) or is_database_unavailable(exc):
            return False
        runs = self._failed_runs[job_id] = self._failed_runs.get(job_id, 0) + 1
        if runs < ATTEMPTS_PER_JOB:
            return False
        log.error("import job given up", extra={"job_id": str(job_id), "runs": runs, "error": repr(exc)})
        await repository.finish_job(conn, job_id, "failed", error=f"stopped after {runs} runs ended in an error: {exc!r}")
        return True

    async def stop(self) -> None:
        """The job being run stops before its next chunk commits (it stays `running` and is
        resumed by the next worker)."""
        self._stopping.set()
        self._wake.set()

    async def _process(self, job_id: uuid.UUID, chunk_rows: int, done: frozenset[int]) -> None:
        conn = await self._connect()
        handle, name = tempfile.mkstemp(prefix=COPY_PREFIX, suffix=COPY_SUFFIX, dir=self.temp_dir)
        path = Path(name)
        # Held until the copy is deleted: another worker's sweep leaves a locked copy alone, and
        # the kernel lets go of the lock if this process dies.
        lock = os.open(path, os.O_RDONLY) if fcntl is not None else None
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with os.fdopen(handle, "wb") as target:
                async for part in repository.parts(conn, job_id):
                    await asyncio.to_thread(target.write, part)
            if not done:
                await repository.set_total(conn, job_id, await asyncio.to_thread(_count, path))

            async def on_chunk(chunk_conn: asyncpg.Connection, result: ChunkResult) -> None:
                if self._stopping.is_set():
                    raise _Stopped
                if not await repository.record_chunk(
                    chunk_conn, job_id, result.index, result.rows, result.created, result.errors
                ):
                    raise _Stopped

            try:
                report = await import_customers(
                    self._connect, path, batch_size=chunk_rows, writers=self.writers, skip_chunks=done, on_chunk=on_chunk
                )
            except _Stopped:
                return
            except ImportFileError as exc:
                await repository.finish_job(conn, job_id, "failed", error=str(exc))
                return
            except Exception as exc:
                if self._stopping.is_set():
                    return
                if is_database_busy(exc) or is_database_unavailable(exc):
                    # Not the file's fault (a deadlock, a full lock table, a lost connection):
                    # the job stays running, and the next pass resumes it after its committed
                    # chunks.
                    raise
                log.exception("import job failed", extra={"job_id": str(job_id)})
                # What committed stays committed (and counted); the job ends here.
                await repository.finish_job(conn, job_id, "failed", error=f"stopped by an unexpected error: {exc!r}")
                return
            ignored = ", ".join(report.ignored_columns) or None
            await repository.finish_job(conn, job_id, "succeeded", ignored_columns=ignored)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            if lock is not None:
                os.close(lock)
            await _closed(conn)


def remove_abandoned_copies(temp_dir: str | None, older_than_s: float = STALE_COPY_S) -> int:
    """Delete the copies of uploads that workers which died mid-job left in `temp_dir` (the
    system's temporary directory if None): the whole file each time, personal data included, and
    the job itself is resumed from the database on a new copy. A live worker holds an exclusive
    lock on its copy while the job runs; a copy nobody holds and not written for `older_than_s`
    (a copy is locked a moment after it is made) is a dead process's. Returns how many went; on
    a system without `flock` (Windows), 0."""
    if fcntl is None:
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for path in Path(temp_dir or tempfile.gettempdir()).glob(f"{COPY_PREFIX}*{COPY_SUFFIX}"):
        try:
            if path.stat().st_mtime > cutoff:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
            removed += 1
        except OSError:  # held by a live worker (or not ours to delete)
            continue
        finally:
            os.close(fd)
    return removed


async def _closed(conn: asyncpg.Connection | None) -> None:
    """Close `conn` (if any, whatever state it is in). Returns None: `conn = await _closed(conn)`."""
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)


def _count(path: Path) -> int:
    try:
        return count_rows(path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return 0
