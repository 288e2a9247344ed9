"""Which database errors mean "PostgreSQL is away" (503 + Retry-After) and which stay a 500,
checked on exceptions raised for real by asyncpg and SQLAlchemy against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cxkit import testing
from cxkit.db import database_error_cause, is_database_unavailable, make_engine, make_session_factory
from cxkit.dev_broker import free_port
from cxkit.pg_pool import create_pg_pool, fetch_one


async def raised(awaitable: Awaitable[object]) -> BaseException:
    try:
        await awaitable
    except Exception as exc:
        return exc
    raise AssertionError("no exception raised")


async def terminate(pid: int) -> None:
    """pg_terminate_backend: what a fast shutdown or an administrator does to a session."""
    admin = await asyncpg.connect(testing.admin_dsn())
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_refused_connections_are_database_unavailable_on_both_pools() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        async with make_session_factory(engine)() as session:
            exc = await raised(session.execute(text("SELECT 1")))
    finally:
        await engine.dispose()
    assert isinstance(exc, ConnectionRefusedError)  # SQLAlchemy does not wrap a failed connect
    assert is_database_unavailable(exc)

    pool = await create_pg_pool(url, max_size=1)
    try:
        exc = await raised(fetch_one(pool, "SELECT 1"))
    finally:
        await pool.close()
    assert isinstance(exc, OSError) and is_database_unavailable(exc)


async def test_sessions_killed_by_an_administrator_are_database_unavailable() -> None:
    # asyncpg: a query running when the server terminates the session, then the closed connection.
    conn = await asyncpg.connect(testing.admin_dsn())
    running = asyncio.create_task(conn.fetchval("SELECT pg_sleep(10)"))
    await asyncio.sleep(0.2)
    await terminate(conn.get_server_pid())
    mid_query = await raised(running)
    after = await raised(conn.fetchval("SELECT 1"))
    # asyncpg reports the server's 57P01 as the connection's end (AdminShutdownError where it
    # arrives as a query's error, e.g. through a pooler): both count.
    assert isinstance(mid_query, asyncpg.PostgresConnectionError | asyncpg.AdminShutdownError), repr(mid_query)
    assert "administrator command" in str(mid_query)
    assert isinstance(after, asyncpg.InterfaceError), repr(after)
    assert is_database_unavailable(mid_query) and is_database_unavailable(after)

    # SQLAlchemy: its wrapper of the same, on a pooled connection the server dropped.
    engine = make_engine(testing.asyncpg_url(testing.admin_dsn()), pool_size=1, max_overflow=0)
    try:
        async with make_session_factory(engine)() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await session.commit()
            await terminate(pid)
            await asyncio.sleep(0.1)
            exc = await raised(session.execute(text("SELECT 1")))
        assert isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
        assert is_database_unavailable(exc)
        cause = database_error_cause(exc)
        assert type(cause).__module__.startswith("asyncpg"), repr(cause)  # named without SQL or parameters
        async with make_session_factory(engine)() as session:  # and the pool recovers by itself
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_a_pool_timeout_is_database_unavailable() -> None:
    engine = create_async_engine(testing.asyncpg_url(testing.admin_dsn()), pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            exc = await raised(engine.connect().__aenter__())
    finally:
        await engine.dispose()
    assert isinstance(exc, sa_exc.TimeoutError) and is_database_unavailable(exc)


async def test_other_errors_are_not_database_unavailable(tmp_path: Path) -> None:
    conn = await asyncpg.connect(testing.admin_dsn())
    try:
        await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO t VALUES (1)")
        duplicate = await raised(conn.execute("INSERT INTO t VALUES (1)"))
        syntax = await raised(conn.execute("SELEC 1"))
    finally:
        await conn.close()
    engine = make_engine(testing.asyncpg_url(testing.admin_dsn()), pool_size=1, max_overflow=0)
    try:
        async with make_session_factory(engine)() as session:
            wrapped = await raised(session.execute(text("SELECT 1/0")))
    finally:
        await engine.dispose()
    missing_file = await raised(asyncio.to_thread((tmp_path / "absent").read_bytes))
    timeout = await raised(asyncio.wait_for(asyncio.sleep(1), 0.01))
    for exc in (duplicate, syntax, wrapped, missing_file, timeout):
        assert not is_database_unavailable(exc), repr(exc)
    assert isinstance(wrapped, sa_exc.DBAPIError)


@pytest.mark.parametrize(
    "error",
    [asyncpg.AdminShutdownError, asyncpg.CannotConnectNowError, asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError],
)
def test_server_going_away_errors_are_database_unavailable(error: type[Exception]) -> None:
    assert is_database_unavailable(error("the server said so"))
    assert not is_database_unavailable(asyncpg.ProtocolViolationError("a bug, not an outage"))


@pytest.mark.parametrize("message", ["connection is closed", "pool is closed"])
def test_an_interface_error_counts_only_when_the_connection_is_gone(message: str) -> None:
    assert is_database_unavailable(asyncpg.InterfaceError(message))
    assert not is_database_unavailable(asyncpg.InterfaceError("cannot perform operation: another operation is in progress"))
