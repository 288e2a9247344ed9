"""A connection goes back to the asyncpg pool (`FairPool`) at once when it is released clean,
and is rolled back first when it is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cxkit.pg_pool import create_pg_pool


@pytest.fixture
async def pool(kit_engine: AsyncEngine) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pg_pool(kit_engine.url.render_as_string(hide_password=False), max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_clean_release_gives_the_connection_back_without_a_turn_of_the_loop(pool: asyncpg.Pool) -> None:
    """asyncpg's own release runs in a task of its own (`asyncio.shield`): the connection came
    back two turns of the event loop later, held by no one meanwhile (3 ms a request under
    load). Here something scheduled as the request ends has not run yet when the connection
    is back and serves the next request."""
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    async with pool.acquire() as conn:
        first = await conn.fetchval("SELECT pg_backend_pid()")
        loop.call_soon(ran.append, "other work")
    assert ran == []
    async with pool.acquire() as conn:
        assert ran == []
        assert await conn.fetchval("SELECT pg_backend_pid()") == first
    assert ran == ["other work"]


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_serves_again(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("BEGIN; CREATE TEMP TABLE left_open (x int)")
        assert conn.is_in_transaction()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == first
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None


async def test_a_failed_statement_leaves_the_connection_usable(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1 / 0")
    assert await pool.fetchval("SELECT 2") == 2


async def test_a_connection_closed_while_held_is_replaced(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await conn.fetchval("SELECT pg_backend_pid()")
        conn.terminate()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") != first


async def test_a_request_cancelled_while_it_holds_a_connection_gives_it_back(pool: asyncpg.Pool) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        async with pool.acquire() as conn:
            started.set()
            await conn.execute("SELECT pg_sleep(10)")

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(pool.fetchval("SELECT 3"), timeout=10) == 3
