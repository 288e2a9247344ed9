"""Import jobs over HTTP (`/v1/imports`): the upload is stored and answered 202 at once, the
service's worker imports it in committed chunks (one `customer.created` per customer), the
refused rows come back as CSV, a job can be cancelled, and a job whose process died is resumed
by the next one without a customer or an event made twice."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from crm.config import CRMSettings
from crm.customers.csv_import import BUSY_ATTEMPTS, import_customers
from crm.imports import repository, service
from crm.imports import worker as worker_module
from crm.imports.worker import ImportWorker
from cxkit import testing
from cxkit.dev_broker import DevBroker
from cxkit.pg_pool import asyncpg_dsn

from .conftest import ALEMBIC


def customers_csv(n: int, prefix: str, *, extra: list[str] = ()) -> bytes:  # type: ignore[assignment]
    lines = ["email,name,external_id,tags"]
    lines += [f"{prefix}-{i}@example.com,Customer {i},{prefix}-ext-{i},a;b" for i in range(n)]
    return ("\n".join([*lines, *extra]) + "\n").encode()


async def upload(client: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    return await client.post("/v1/imports", files={"file": ("customers.csv", body, "text/csv")}, headers=headers)


async def finished(client: httpx.AsyncClient, job_id: str, timeout: float = 30) -> dict[str, Any]:  # noqa: ASYNC109
    async def probe() -> dict[str, Any] | None:
        job: dict[str, Any] = (await client.get(f"/v1/imports/{job_id}")).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = await testing.wait_for(probe, timeout=timeout, interval=0.1)
    return result


async def test_upload_is_answered_at_once_and_imported_in_the_background_with_counts_errors_and_events(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    await make.customer(email="taken@example.com")
    body = customers_csv(
        12,
        "imp",
        extra=[
            "not-an-email,Bad Row,,",  # line 14
            "taken@example.com,Already There,,",  # 15: skipped
            "imp-0@example.com,Repeat,,",  # 16: repeats line 2
            "new@example.com,Repeats an external id,imp-ext-1,",  # 17
        ],
    )
    response = await upload(client, body, **{"Idempotency-Key": "imp-1"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running", "succeeded")
    assert response.headers["Location"] == f"/v1/imports/{job['id']}"
    replay = await upload(client, body, **{"Idempotency-Key": "imp-1"})
    assert replay.json()["id"] == job["id"]

    done = await finished(client, job["id"])
    assert done["status"] == "succeeded", done
    assert (done["total_rows"], done["rows_read"], done["created"], done["skipped"], done["failed"]) == (16, 16, 12, 1, 3)
    assert done["progress"] == 1.0

    created = await events("customer.created")
    imported = [e for e in created if e["data"]["email"].startswith("imp-")]
    assert len(imported) == 12
    assert len({e["subject"] for e in imported}) == 12
    assert {e["data"]["external_id"] for e in imported} == {f"imp-ext-{i}" for i in range(12)}
    found = (await client.get("/v1/customers", params={"external_id": "imp-ext-3"})).json()["items"]
    assert [c["email"] for c in found] == ["imp-3@example.com"]

    errors = await client.get(f"/v1/imports/{job['id']}/errors")
    assert errors.status_code == 200
    assert errors.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(errors.text)))
    assert rows[0] == ["line", "email", "reason"]
    assert [r[0] for r in rows[1:]] == ["14", "15", "16", "17"]
    assert "already exists" in rows[2][2]
    assert rows[3][2] == "duplicate of line 2 in this file"
    assert rows[4][2] == "duplicate of line 3 in this file"


async def test_a_file_without_the_required_columns_fails_the_job_with_the_reason(client: httpx.AsyncClient) -> None:
    job = (await upload(client, b"mail,full name\nx@example.com,X\n")).json()
    done = await finished(client, job["id"])
    assert done["status"] == "failed"
    assert "email" in done["error"] and done["created"] == 0


async def test_a_file_with_nul_in_its_header_fails_its_job_and_the_jobs_after_it_still_run(client: httpx.AsyncClient) -> None:
    """A NUL in the header (a binary file, a NUL column name): the job fails with the reason. The
    header's names used to go into the stored reason or the ignored columns, which PostgreSQL
    refused, so the job stayed queued and every later job waited behind it."""
    bad = [b"em\x00ail,name\nx@example.com,X\n", b"\x00\x01\x02RIFF\x00WEBP", b"email,name,\x00\nx@example.com,X,y\n"]
    jobs = [(await upload(client, body)).json()["id"] for body in bad]
    good = (await upload(client, customers_csv(3, "after-nul"))).json()["id"]
    for job_id in jobs:
        done = await finished(client, job_id, timeout=10)
        assert (done["status"], done["created"]) == ("failed", 0) and "NUL" in done["error"], done
    assert (await finished(client, good, timeout=10))["created"] == 3


async def test_an_unreadable_file_fails_its_job_with_a_reason_that_does_not_name_the_servers_copy(
    client: httpx.AsyncClient,
) -> None:
    """The reason is stored with the job and answered to the API's clients: it says what is wrong
    with the upload, not where the worker copied it (the server's temporary directory)."""
    latin1 = "email,name\nx@example.com,Jos\u00e9\n".encode("latin-1")  # the header is fine, the row is not UTF-8
    late = customers_csv(400, "late") + "y@example.com,Jos\u00e9\n".encode("latin-1")  # past the first block read
    first, second = [(await upload(client, body)).json()["id"] for body in (latin1, late)]
    for job_id, reason in ((first, "not a UTF-8 CSV file: "), (second, "could not be read past line ")):
        done = await finished(client, job_id, timeout=10)
        assert (done["status"], done["created"]) == ("failed", 0), done
        assert done["error"].startswith(reason), done
        assert worker_module.COPY_PREFIX not in done["error"] and tempfile.gettempdir() not in done["error"], done


async def test_uploads_are_checked_and_unknown_jobs_are_404(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    not_csv = await client.post("/v1/imports", files={"file": ("x.png", b"\x89PNG", "image/png")})
    assert not_csv.status_code == 415
    assert not_csv.headers["content-type"] == "application/problem+json"
    empty = await upload(client, b"")
    assert empty.status_code == 422
    missing = uuid.uuid4()
    for path in (f"/v1/imports/{missing}", f"/v1/imports/{missing}/errors"):
        assert (await client.get(path)).status_code == 404
    assert (await client.post(f"/v1/imports/{missing}/cancel")).status_code == 404
    reader = testing.bearer(keys["read"])
    assert (await client.post("/v1/imports", files={"file": ("a.csv", b"email,name\n")}, headers=reader)).status_code == 403


async def test_a_file_cut_short_of_its_closing_boundary_starts_no_job(client: httpx.AsyncClient) -> None:
    file_part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\nContent-Type: text/csv\r\n\r\n'
    body = file_part + customers_csv(3, "cut")
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    cut = await client.post("/v1/imports", content=body + b"\r\n-", headers=multipart)
    assert cut.status_code == 422 and cut.json()["detail"].startswith("malformed multipart body")
    assert (await client.get("/v1/imports")).json()["items"] == []
    whole = await client.post("/v1/imports", content=body + b"\r\n--b--\r\n", headers=multipart)
    assert whole.status_code == 202, whole.text
    assert (await finished(client, whole.json()["id"]))["created"] == 3


async def test_an_import_key_is_kept_as_long_as_the_idempotency_setting_says(
    client: httpx.AsyncClient, crm_settings: CRMSettings, monkeypatch: pytest.MonkeyPatch, session_factory: Any
) -> None:
    monkeypatch.setattr(crm_settings, "idempotency_ttl_hours", 48)
    body = customers_csv(2, "ttl")
    first = await upload(client, body, **{"Idempotency-Key": "imp-ttl"})
    assert first.status_code == 202
    await finished(client, first.json()["id"])
    async with session_factory() as session:
        aged = "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE key = 'imp-ttl'"
        assert (await session.execute(text(aged))).rowcount == 1
        await session.commit()
    again = await upload(client, body, **{"Idempotency-Key": "imp-ttl"})
    assert again.status_code == 202 and again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert [job["id"] for job in (await client.get("/v1/imports")).json()["items"]] == [first.json()["id"]]


async def test_imports_are_listed_newest_first_by_page_and_by_status(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    started = []
    for n, body in enumerate([customers_csv(2, "list-a"), b"mail,full name\nx@example.com,X\n", customers_csv(3, "list-b")]):
        started.append((await upload(client, body, **{"Idempotency-Key": f"list-{n}"})).json()["id"])
        await finished(client, started[-1])
    newest_first = started[::-1]

    listed = (await client.get("/v1/imports")).json()
    assert [job["id"] for job in listed["items"]] == newest_first and listed["next_cursor"] is None
    assert listed["items"][0] == (await client.get(f"/v1/imports/{newest_first[0]}")).json()  # as GET /{id} gives it
    assert [job["status"] for job in listed["items"]] == ["succeeded", "failed", "succeeded"]

    first = (await client.get("/v1/imports", params={"limit": 2})).json()
    rest = (await client.get("/v1/imports", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [job["id"] for job in first["items"] + rest["items"]] == newest_first and rest["next_cursor"] is None

    failed = (await client.get("/v1/imports", params={"status": "failed"})).json()
    assert [job["id"] for job in failed["items"]] == [started[1]] and "email" in failed["items"][0]["error"]
    assert (await client.get("/v1/imports", params={"status": "running"})).json()["items"] == []

    for params in ({"status": "done"}, {"cursor": "bm90LWEtY3Vyc29y"}, {"limit": 0}):
        bad = await client.get("/v1/imports", params=params)
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json", params
    reader = await client.get("/v1/imports", headers=testing.bearer(keys["read"]))
    assert reader.status_code == 200 and len(reader.json()["items"]) == 3
    assert (await client.get("/v1/imports", headers={"Authorization": ""})).status_code == 401


async def test_jobs_that_ended_past_the_retention_are_deleted_with_their_refused_rows(
    client: httpx.AsyncClient, crm_settings: CRMSettings, crm_database_url: str
) -> None:
    old, recent = [
        (await upload(client, customers_csv(2, f"keep-{n}", extra=["bad,Row,,"]), **{"Idempotency-Key": f"ret-{n}"})).json()
        for n in range(2)
    ]
    for job in (old, recent):
        await finished(client, job["id"])
    # One ended 31 days ago; a job still queued that long is not touched.
    conn = await asyncpg.connect(asyncpg_dsn(crm_database_url))
    try:
        await conn.execute("UPDATE import_jobs SET finished_at = now() - interval '31 days' WHERE id = $1", uuid.UUID(old["id"]))
        stuck = uuid.uuid4()
        # Held as a worker holds the job it runs, so the app's own worker (polling) leaves it queued.
        assert await repository.try_lock(conn, stuck)
        await conn.execute(
            "INSERT INTO import_jobs (id, status, size_bytes, chunk_rows, rows_read, created, skipped, failed, done_chunks, "
            "created_at, updated_at) VALUES ($1, 'queued', 0, 5000, 0, 0, 0, 0, '{}', now() - interval '40 days', now())",
            stuck,
        )
        worker = ImportWorker(crm_database_url, retention_days=30)
        assert await worker.prune() == 1
        assert await worker.prune() == 0
        assert await conn.fetchval("SELECT count(*) FROM import_job_errors WHERE job_id = $1", uuid.UUID(old["id"])) == 0
        assert await conn.fetchval("SELECT count(*) FROM import_job_errors WHERE job_id = $1", uuid.UUID(recent["id"])) == 1
        assert await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", stuck) == "queued"
        await conn.execute("DELETE FROM import_jobs WHERE id = $1", stuck)
    finally:
        await conn.close()
    assert (await client.get(f"/v1/imports/{old['id']}")).status_code == 404
    assert (await client.get(f"/v1/imports/{recent['id']}")).json()["failed"] == 1
    assert [job["id"] for job in (await client.get("/v1/imports")).json()["items"]] == [recent["id"]]


@pytest.fixture
async def idle_app(crm_settings: CRMSettings) -> Any:
    """The app without its import worker: jobs stay queued until a test runs one."""
    from crm.main import create_app

    app: FastAPI = create_app(crm_settings.model_copy(update={"run_imports": False, "imports_max_bytes": 2_000_000}))
    async with app.router.lifespan_context(app):
        yield app


async def _status(url: str, job_id: str) -> asyncpg.Record:
    rows = await testing.db_rows(
        url, "SELECT status, rows_read, created, skipped, failed, done_chunks FROM import_jobs WHERE id = $1", uuid.UUID(job_id)
    )
    return rows[0]


async def test_a_queued_job_cancelled_never_runs_and_a_running_one_stops_after_its_committed_chunks(
    client: httpx.AsyncClient, idle_app: FastAPI, keys: dict[str, str], crm_database_url: str, events: Any
) -> None:
    transport = httpx.ASGITransport(app=idle_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crm", headers=testing.bearer(keys["admin"])) as idle:
        too_large = await upload(idle, customers_csv(40_000, "big"))
        assert too_large.status_code == 413
        assert too_large.headers["content-type"] == "application/problem+json"
        assert too_large.json()["detail"] == "import files are at most 2000000 bytes"
        queued = (await upload(idle, customers_csv(3, "q"))).json()
        cancelled = await idle.post(f"/v1/imports/{queued['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await idle.post(f"/v1/imports/{queued['id']}/cancel")).json()["status"] == "cancelled"

        running = (await upload(idle, customers_csv(20_000, "run"))).json()
        worker = ImportWorker(crm_database_url, writers=1)
        conn = await asyncpg.connect(asyncpg_dsn(crm_database_url))
        await conn.execute("UPDATE import_jobs SET chunk_rows = 500 WHERE id = $1", uuid.UUID(running["id"]))
        await conn.close()
        task = asyncio.create_task(worker.run_once())
        await testing.wait_for(lambda: _status(crm_database_url, running["id"]), timeout=5)

        async def some_committed() -> bool:
            return (await _status(crm_database_url, running["id"]))["rows_read"] >= 1000

        await testing.wait_for(some_committed, timeout=30)
        stopped = await idle.post(f"/v1/imports/{running['id']}/cancel")
        assert stopped.json()["status"] == "cancelled"
        await asyncio.wait_for(task, 30)
        assert not await worker.run_once()  # nothing left to run: the cancelled jobs stay cancelled

    row = await _status(crm_database_url, running["id"])
    assert row["status"] == "cancelled"
    assert 1000 <= row["rows_read"] < 20_000
    assert row["rows_read"] == len(row["done_chunks"]) * 500 == row["created"]
    customers = await testing.db_rows(crm_database_url, "SELECT count(*) FROM customers WHERE email LIKE 'run-%'")
    assert customers[0][0] == row["created"]
    assert len([e for e in await events("customer.created") if e["data"]["email"].startswith("run-")]) == row["created"]
    assert not await testing.db_rows(crm_database_url, "SELECT 1 FROM customers WHERE email LIKE 'q-%'")


async def ended(url: str, job_id: str) -> asyncpg.Record:
    """The job's row once it has succeeded or failed (waits up to a minute)."""

    async def probe() -> asyncpg.Record | None:
        row = await _status(url, job_id)
        return row if row["status"] in ("succeeded", "failed") else None

    row: asyncpg.Record = await testing.wait_for(probe, timeout=60, interval=0.05)
    return row


async def queued_job(url: str, tmp_path: Path, rows: int, chunk: int, prefix: str, *, before: str | None = None) -> str:
    """A job importing `rows` new customers in chunks of `chunk`, queued straight in the
    database `url` (after running the SQL `before`, if any); its id."""
    source = tmp_path / "customers.csv"
    source.write_bytes(customers_csv(rows, prefix))
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if before is not None:
            await conn.execute(before)
        async with conn.transaction():
            job = await service.create_job(conn, source, filename="customers.csv", chunk_rows=chunk, created_by="test")
    finally:
        await conn.close()
    return str(job["id"])


async def test_a_job_whose_service_process_was_killed_is_resumed_by_the_next_one_without_duplicates(
    broker: DevBroker, tmp_path: Path
) -> None:
    name, url = await testing.migrated_database("crm_imp_restart", ALEMBIC)
    try:
        rows, chunk = 12_000, 400
        job_id = await queued_job(url, tmp_path, rows, chunk, "rs")
        env = {
            "CRM_DATABASE_URL": url,
            "CRM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "CRM_RUN_RELAY": "false",
            "CRM_RUN_CONSUMERS": "false",
            "CRM_IMPORTS_POLL_SECONDS": "0.2",
            "CX_VALIDATE_EVENTS": "0",
        }
        first = testing.ServiceProcess("crm.main:create_app", env, tmp_path / "first.log")
        first.start()
        try:

            async def under_way() -> bool:
                return (await _status(url, job_id))["rows_read"] >= 2 * chunk

            await testing.wait_for(under_way, timeout=60, interval=0.02)
        finally:
            first.stop(kill=True)
        at_kill = await _status(url, job_id)
        assert at_kill["status"] == "running"
        assert at_kill["rows_read"] < rows, "the job ended before the kill: make the file larger"
        assert at_kill["rows_read"] == len(at_kill["done_chunks"]) * chunk

        second = testing.ServiceProcess("crm.main:create_app", env, tmp_path / "second.log")
        second.start()
        try:

            async def done() -> bool:
                return (await _status(url, job_id))["status"] == "succeeded"

            await testing.wait_for(done, timeout=120, interval=0.1)
        finally:
            second.stop()
        final = await _status(url, job_id)
        assert (final["rows_read"], final["created"], final["skipped"], final["failed"]) == (rows, rows, 0, 0)
        assert sorted(final["done_chunks"]) == list(range(rows // chunk))
        counts = await testing.db_rows(
            url,
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM outbox WHERE event_type = 'customer.created'), "
            "(SELECT count(DISTINCT key) FROM outbox WHERE event_type = 'customer.created')",
        )
        assert tuple(counts[0]) == (rows, rows, rows)
    finally:
        await testing.drop_database(name)


async def test_a_chunk_the_database_refuses_for_now_is_tried_again_and_the_job_still_succeeds(tmp_path: Path) -> None:
    """A deadlock's victim (here the server refuses one row's insert, as it refuses the victim
    of a deadlock) is not the file's fault. The engine writes the chunk again a few times
    (`BUSY_ATTEMPTS`); refused more often than that, the job stays running, the next pass
    resumes it after its committed chunks, and it ends with every customer made once."""
    name, url = await testing.migrated_database("crm_imp_busy", ALEMBIC)
    refusals = BUSY_ATTEMPTS + 1  # one pass's attempts, and the first of the next pass's
    try:
        rows, chunk = 2_000, 500
        refuse_twice = f"""
            CREATE SEQUENCE refusals;
            CREATE FUNCTION refuse_twice() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.name = 'Customer 1234' AND nextval('refusals') <= {refusals} THEN
                    RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_twice BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION refuse_twice();
        """
        job_id = await queued_job(url, tmp_path, rows, chunk, "busy", before=refuse_twice)

        worker = ImportWorker(url, writers=1, poll_seconds=0.2)
        task = asyncio.create_task(worker.run())
        try:
            final = await ended(url, job_id)
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        assert final["status"] == "succeeded", dict(final)
        assert (final["rows_read"], final["created"], final["skipped"], final["failed"]) == (rows, rows, 0, 0)
        assert sorted(final["done_chunks"]) == list(range(rows // chunk))
        counts = await testing.db_rows(
            url,
            "SELECT (SELECT count(*) FROM customers), (SELECT count(DISTINCT key) FROM outbox "
            "WHERE event_type = 'customer.created'), (SELECT count(*) FROM outbox WHERE event_type = 'customer.created'), "
            "(SELECT last_value FROM refusals)",
        )
        assert tuple(counts[0]) == (rows, rows, rows, refusals + 1)  # refused, then let through
    finally:
        await testing.drop_database(name)


async def test_the_worker_polls_on_one_connection_and_opens_another_when_it_is_lost(tmp_path: Path) -> None:
    """Idle, the worker keeps one connection from pass to pass (a connection per pass cost a
    new PostgreSQL backend every `poll_seconds`); when that one is gone, the next pass opens
    another and jobs still run; stopped, it leaves none behind."""
    name, url = await testing.migrated_database("crm_imp_conn", ALEMBIC)

    async def worker_backends() -> list[int]:
        rows = await testing.db_rows(
            url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'crm-imports'"
        )
        return [row[0] for row in rows]

    try:
        worker = ImportWorker(url, writers=1, poll_seconds=0.02)
        task = asyncio.create_task(worker.run())
        try:
            await testing.wait_for(worker_backends, timeout=10)
            seen = []
            for _ in range(25):  # about 25 passes
                seen.append(tuple(await worker_backends()))
                await asyncio.sleep(0.02)
            assert len(set(seen)) == 1 and len(seen[0]) == 1, seen
            (first,) = seen[0]

            await testing.db_rows(url, "SELECT pg_terminate_backend($1)", first)
            job_id = await queued_job(url, tmp_path, 30, 10, "conn")

            async def done() -> asyncpg.Record | None:
                row = await _status(url, job_id)
                return row if row["status"] == "succeeded" else None

            assert (await testing.wait_for(done, timeout=30, interval=0.05))["created"] == 30

            async def one_left() -> list[int] | None:  # the job's own connections close after it ends
                backends = await worker_backends()
                return backends if len(backends) == 1 else None

            (second,) = await testing.wait_for(one_left, timeout=10)
            assert second != first
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        assert await worker_backends() == []
    finally:
        await testing.drop_database(name)


_HOLD_A_COPY = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(worker_module.fcntl is None, reason="no flock here (Windows)")
def test_copies_of_uploads_left_by_a_process_that_died_mid_job_are_deleted_and_live_ones_kept(tmp_path: Path) -> None:
    """A worker killed mid-job leaves its copy of the upload (the whole file, personal data
    included); the job is resumed from the database on a new copy. Another worker deletes such a
    copy once its process is gone, and never one a live worker holds."""

    def copy(name: str, age_s: float) -> Path:
        path = tmp_path / f"crm-import-{name}.csv"
        path.write_text("email,name\nsomeone@example.com,Someone\n")
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - age_s))
        return path

    dead, live, fresh = copy("dead", 120), copy("live", 120), copy("fresh", 0)
    other = tmp_path / "someone-elses.csv"
    other.write_text("x\n")
    os.utime(other, (0, 0))
    holders = [subprocess.Popen([sys.executable, "-c", _HOLD_A_COPY, str(p)], stdout=subprocess.PIPE) for p in (dead, live)]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        assert worker_module.remove_abandoned_copies(str(tmp_path)) == 0  # both held
        holders[0].kill()  # as a service killed mid-job
        holders[0].wait()
        assert worker_module.remove_abandoned_copies(str(tmp_path)) == 1
        assert not dead.exists() and live.exists() and fresh.exists() and other.exists()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert worker_module.remove_abandoned_copies(str(tmp_path)) == 1  # the live one's process is gone too
    assert fresh.exists() and other.exists()


@pytest.mark.skipif(worker_module.fcntl is None, reason="no flock here (Windows)")
async def test_a_running_jobs_copy_is_held_so_another_workers_sweep_leaves_it(tmp_path: Path) -> None:
    name, url = await testing.migrated_database("crm_imp_copy", ALEMBIC)
    try:
        (tmp_path / "upload").mkdir()
        job_id = await queued_job(url, tmp_path / "upload", 20_000, 500, "held")
        copies = tmp_path / "copies"
        copies.mkdir()
        abandoned = copies / "crm-import-abandoned.csv"
        abandoned.write_text("email,name\n")
        os.utime(abandoned, (0, 0))
        worker = ImportWorker(url, writers=1, poll_seconds=0.05, temp_dir=str(copies))
        task = asyncio.create_task(worker.run())
        try:

            async def some_committed() -> bool:
                return (await _status(url, job_id))["rows_read"] >= 1000

            await testing.wait_for(some_committed, timeout=30, interval=0.02)
            assert not abandoned.exists()  # the worker's sweep when it started
            (running,) = list(copies.glob("crm-import-*.csv"))
            assert worker_module.remove_abandoned_copies(str(copies), older_than_s=0) == 0  # another worker's sweep
            assert running.exists()
            final = await ended(url, job_id)
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        assert final["status"] == "succeeded" and final["created"] == 20_000, dict(final)
        assert list(copies.iterdir()) == []
    finally:
        await testing.drop_database(name)


async def test_a_job_whose_runs_keep_ending_in_an_error_is_failed_and_the_jobs_after_it_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is not the database's, escaping a job's run (here: counting its rows), used
    to be retried on every pass, ahead of every other job, for good. After ATTEMPTS_PER_JOB runs
    in a row the job is failed with the error, and the next job runs."""
    name, url = await testing.migrated_database("crm_imp_giveup", ALEMBIC)
    stuck = await queued_job(url, tmp_path, 5, 5, "stuck")
    runs: list[str] = []
    real_set_total = repository.set_total

    async def set_total(conn: asyncpg.Connection, job_id: uuid.UUID, total: int) -> None:
        if str(job_id) == stuck:
            runs.append(stuck)
            raise RuntimeError("cannot count this one")
        await real_set_total(conn, job_id, total)

    monkeypatch.setattr(repository, "set_total", set_total)
    try:
        worker = ImportWorker(url, writers=1, poll_seconds=0.02)
        task = asyncio.create_task(worker.run())
        try:
            later = await queued_job(url, tmp_path, 7, 5, "later")

            async def ended(job_id: str) -> asyncpg.Record | None:
                row = await _status(url, job_id)
                return row if row["status"] in ("succeeded", "failed") else None

            assert (await testing.wait_for(lambda: ended(stuck), timeout=30, interval=0.05))["status"] == "failed"
            assert (await testing.wait_for(lambda: ended(later), timeout=30, interval=0.05))["created"] == 7
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        assert len(runs) == worker_module.ATTEMPTS_PER_JOB
        (error,) = await testing.db_rows(url, "SELECT error FROM import_jobs WHERE id = $1", uuid.UUID(stuck))
        assert (
            error[0]
            == f"stopped after {worker_module.ATTEMPTS_PER_JOB} runs ended in an error: RuntimeError('cannot count this one')"
        )
    finally:
        await testing.drop_database(name)


# --- the refused rows and an erasure ------------------------------------------------------------


def _refused(body: str) -> dict[str, tuple[str, str]]:
    """line -> (email, reason) of `GET /v1/imports/{id}/errors`."""
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["line", "email", "reason"]
    return {r[0]: (r[1], r[2]) for r in rows[1:]}


TAKEN_ERASED = "a customer with this email already exists (the address was erased)"


async def test_an_erasure_takes_the_customers_address_out_of_every_refused_row_whatever_the_reason(
    client: httpx.AsyncClient, make: Any
) -> None:
    """A refused row kept the address as written (and, refused as existing, inside its reason),
    and `GET /v1/imports/{id}/errors` served it for the retention's 30 days after the customer's
    erasure. The erasure finds the rows by the address's key, whatever the reason and the job's
    state; the row, its line and the rest of its reason stay."""
    ada = await make.customer(email="Ada.Lovelace@Example.com", name="Ada")
    ada_old = await make.customer(email="Ada.Old@example.com", name="Ada L.")
    await make.customer(email="bob-erase@example.com", name="Bob")
    body = (
        b"email,name,external_id,survey_opt_out\n"
        b"ada.lovelace@example.com,Ada again,,\n"  # 2: taken by Ada
        b"grace-erase@example.com,Grace,grace-1,\n"  # 3: created
        b"GRACE-Erase@example.com,Grace again,,\n"  # 4: repeats line 3
        b"ADA.LOVELACE@example.com,Ada,,maybe\n"  # 5: invalid, with Ada's address
        b"bob-erase@example.com,Bob again,,\n"  # 6: taken by Bob, who stays
        b"ada.old@example.com,Ada again,,\n"  # 7: taken by her duplicate, merged into her below
    )
    job = (await upload(client, body)).json()
    done = await finished(client, job["id"])
    assert (done["created"], done["skipped"], done["failed"]) == (1, 3, 2), done
    before = _refused((await client.get(f"/v1/imports/{job['id']}/errors")).text)
    assert before["2"] == ("ada.lovelace@example.com", "a customer with email ada.lovelace@example.com already exists")
    assert before["5"][0] == "ADA.LOVELACE@example.com"
    invalid = before["5"][1]
    assert "survey_opt_out" in invalid

    merged = await client.post(f"/v1/customers/{ada['id']}/merge", json={"duplicate_id": ada_old["id"]})
    assert merged.status_code == 200, merged.text

    # Hers until then: her data export holds them (those of her address, as with leads).
    export = (await client.get(f"/v1/customers/{ada['id']}/data-export")).json()
    assert sorted(row["line"] for row in export["sections"]["import_job_errors"]) == [2, 5]

    assert (await client.delete(f"/v1/customers/{ada['id']}")).status_code == 204
    errors = await client.get(f"/v1/imports/{job['id']}/errors")
    assert "ada" not in errors.text.lower(), errors.text
    after = _refused(errors.text)
    assert after["2"] == after["7"] == ("", TAKEN_ERASED)
    assert after["5"] == ("", invalid)
    assert after["4"] == before["4"] and after["6"] == before["6"]  # not her address: kept
    assert (await client.delete(f"/v1/customers/{ada['id']}")).status_code == 204  # again: nothing more

    # The customer the import made: the row that repeated her address loses it too.
    [grace] = (await client.get("/v1/customers", params={"external_id": "grace-1"})).json()["items"]
    assert (await client.delete(f"/v1/customers/{grace['id']}")).status_code == 204
    errors = await client.get(f"/v1/imports/{job['id']}/errors")
    assert "grace" not in errors.text.lower(), errors.text
    assert _refused(errors.text) == after | {"4": ("", "duplicate of line 3 in this file")}


async def test_an_erasure_reaches_the_refused_rows_a_running_job_has_committed(
    client: httpx.AsyncClient, make: Any, crm_database_url: str, tmp_path: Path
) -> None:
    """The chunks a job still running has committed: their refused rows are erased like a
    finished job's (a row a chunk refuses while the erasure commits is not: see
    `crm.imports.repository.ImportErrorRepository`)."""
    ada = await make.customer(email="ada-running@example.com", name="Ada")
    source = tmp_path / "customers.csv"
    source.write_bytes(customers_csv(3, "running", extra=["Ada-Running@example.com,Ada again,,"]))
    url = asyncpg_dsn(crm_database_url)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            job = await service.create_job(conn, source, filename="customers.csv", chunk_rows=500, created_by="test")
        job_id = job["id"]
        # Held as a worker holds the job it runs, so the app's own worker leaves it running.
        assert await repository.try_lock(conn, job_id)
        assert await repository.start_job(conn, job_id) is not None

        async def on_chunk(chunk_conn: asyncpg.Connection, result: Any) -> None:
            assert await repository.record_chunk(chunk_conn, job_id, result.index, result.rows, result.created, result.errors)

        report = await import_customers(lambda: asyncpg.connect(url), source, on_chunk=on_chunk)
        assert [(e.line, e.email) for e in report.errors] == [(5, "Ada-Running@example.com")]
        assert (await client.get(f"/v1/imports/{job_id}")).json()["status"] == "running"

        assert (await client.delete(f"/v1/customers/{ada['id']}")).status_code == 204
        errors = await client.get(f"/v1/imports/{job_id}/errors")
        assert _refused(errors.text) == {"5": ("", TAKEN_ERASED)}
        await conn.execute("DELETE FROM import_jobs WHERE id = $1", job_id)
    finally:
        await conn.close()


async def _alembic(database_url: str, command: str, revision: str) -> None:
    """`alembic COMMAND REVISION` on the database, as its own process (Alembic's env.py runs its
    own event loop)."""
    code = (
        "import sys; from alembic import command; from cxkit.migrations import alembic_config; from pathlib import Path; "
        "getattr(command, sys.argv[3])(alembic_config(Path(sys.argv[1]), sys.argv[2]), sys.argv[4])"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(ALEMBIC), database_url, command, revision, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]


async def test_the_migration_keys_the_refused_rows_already_stored_as_the_service_keys_an_address() -> None:
    """crm0027 gives the rows stored before it their address's key, made as `address_key`
    makes it (Python's lower(), which PostgreSQL's does not match beyond ASCII), and goes back."""
    name = await testing.create_database("crm_imp_keys")
    url = testing.asyncpg_url(testing.database_dsn(name))
    try:
        await _alembic(url, "upgrade", "crm0026")
        job_id = uuid.uuid4()
        emails = {2: " Ada@Example.COM", 3: "\u0130nci@example.com", 4: "ZO\u03a3@example.com", 5: None, 6: "not-an-email"}
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await repository.insert_job(conn, job_id, filename=None, chunk_rows=500, created_by=None)
            await conn.executemany(
                "INSERT INTO import_job_errors (job_id, line, email, reason) VALUES ($1, $2, $3, 'refused')",
                [(job_id, line, email) for line, email in emails.items()],
            )
        finally:
            await conn.close()
        await _alembic(url, "upgrade", "crm0027")
        rows = await testing.db_rows(url, "SELECT line, address_key FROM import_job_errors ORDER BY line")
        assert {r["line"]: r["address_key"] for r in rows} == {
            line: email.strip().lower() if email is not None else None for line, email in emails.items()
        }
        assert rows[1]["address_key"] == "i\u0307nci@example.com" and rows[2]["address_key"] == "zo\u03c2@example.com"
        await _alembic(url, "downgrade", "crm0026")
        columns = await testing.db_rows(
            url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'import_job_errors'"
        )
        assert "address_key" not in {c[0] for c in columns}
    finally:
        await testing.drop_database(name)
