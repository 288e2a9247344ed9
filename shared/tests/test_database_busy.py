"""PostgreSQL refusing a transaction for now (a deadlock's victim, a serialization failure, a
full lock table) is told apart from a bug and from an outage, on errors raised for real by the
server: an HTTP request answers 503 `database-busy` with `Retry-After` (nothing was changed, so
it may be sent again) instead of a 500, with one log line and no traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit import testing
from cxkit.db import is_database_busy, is_database_unavailable
from cxkit.http.problems import install_problem_handlers
from cxkit.pg_pool import create_pg_pool


def raise_sql(sqlstate: str) -> str:
    """A statement the server answers with an error of this SQLSTATE."""
    return f"DO $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '{sqlstate}'; END $$"


async def error_of(run: object) -> BaseException:
    try:
        await run  # type: ignore[misc]
    except Exception as exc:
        return exc
    raise AssertionError("no error")


async def test_busy_errors_are_told_apart_from_bugs_and_outages(sessions: async_sessionmaker[AsyncSession]) -> None:
    conn = await asyncpg.connect(testing.admin_dsn())
    try:
        busy = {state: await error_of(conn.execute(raise_sql(state))) for state in ("40001", "40P01", "53200", "53100", "55P03")}
        bugs = {state: await error_of(conn.execute(raise_sql(state))) for state in ("23505", "22012", "42601", "54000")}
    finally:
        await conn.close()
    async with sessions() as session:
        wrapped = await error_of(session.execute(text(raise_sql("40P01"))))
    async with sessions() as session:
        wrapped_bug = await error_of(session.execute(text(raise_sql("22012"))))
    assert isinstance(busy["40P01"], asyncpg.DeadlockDetectedError) and isinstance(wrapped, sa_exc.DBAPIError)
    for state, exc in [*busy.items(), ("40P01 through SQLAlchemy", wrapped)]:
        assert is_database_busy(exc) and not is_database_unavailable(exc), state
    for state, exc in [*bugs.items(), ("22012 through SQLAlchemy", wrapped_bug)]:
        assert not is_database_busy(exc), state
    assert not is_database_busy(ValueError("no database involved"))


@pytest.fixture
async def app(kit_engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[FastAPI]:
    pool = await create_pg_pool(kit_engine.url.render_as_string(hide_password=False), max_size=4)
    router = APIRouter()

    @router.post("/locks/{first}/{second}")
    async def lock_both(first: int, second: int) -> dict[str, str]:
        """Takes two advisory locks a moment apart: two requests in opposite orders deadlock."""
        async with sessions() as session, session.begin():
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": first})
            await asyncio.sleep(0.3)
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": second})
        return {"locked": f"{first},{second}"}

    @router.post("/raise/{sqlstate}")
    async def refused(sqlstate: str) -> None:
        async with pool.acquire() as conn:
            await conn.execute(raise_sql(sqlstate))

    application = FastAPI()
    install_problem_handlers(application)
    application.include_router(router)
    try:
        yield application
    finally:
        await pool.close()


async def test_a_deadlocked_request_answers_503_database_busy_and_may_be_sent_again(app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        with testing.collected_logs() as logs:
            answers = await asyncio.gather(client.post("/locks/1/2"), client.post("/locks/2/1"))
            full_lock_table = await client.post("/raise/53200")
            bug = await client.post("/raise/22012")
        again = await client.post("/locks/2/1")

    assert sorted(a.status_code for a in answers) == [200, 503], [a.text for a in answers]
    for refused in [next(a for a in answers if a.status_code == 503), full_lock_table]:
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "1"
        problem = refused.json()
        assert problem["type"].endswith("/database-busy") and problem["status"] == 503
        assert problem["detail"] == "The database could not finish this request now (nothing was changed); retry shortly."
    assert bug.status_code == 500  # a bug stays a bug
    assert again.status_code == 200  # the deadlock's victim, sent again, succeeds

    busy_lines = [r for r in logs.records if r.getMessage() == "database busy"]
    assert len(busy_lines) == 2 and all(r.levelno == logging.WARNING and r.exc_info is None for r in busy_lines)
    assert {r.__dict__["error"].split(":")[0] for r in busy_lines} == {"DeadlockDetectedError", "OutOfMemoryError"}
