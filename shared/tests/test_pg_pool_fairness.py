"""The asyncpg pool serves its waiters first come, first served (`FairPool`)."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cxkit.pg_pool import FairPool, asyncpg_dsn, create_pg_pool

WORKERS = 32
ROUNDS = 10
CONNECTIONS = 2


async def _open_every_connection(pool: asyncpg.Pool) -> None:
    """The pool opens connections as they are first needed; opened here, so that a connection
    still being opened (and initialised) does not hold its request back while the other serves."""

    async def hold() -> None:
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_sleep(0.05)")

    await asyncio.gather(*(hold() for _ in range(CONNECTIONS)))


async def _most_overtaken(pool: asyncpg.Pool) -> int:
    """Many more requests than connections, each coming back for more: every request takes a
    ticket as it asks for a connection. Returns the most later tickets served before an
    earlier one (first come, first served: fewer than the pool has connections, the requests
    served beside it)."""
    await _open_every_connection(pool)
    tickets = itertools.count()
    served: list[int] = []

    async def worker() -> None:
        for _ in range(ROUNDS):
            ticket = next(tickets)
            async with pool.acquire() as conn:
                served.append(ticket)
                await conn.execute("SELECT 1")

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    assert sorted(served) == list(range(WORKERS * ROUNDS))
    return max(sum(1 for later in served[:i] if later > ticket) for i, ticket in enumerate(served))


async def test_connections_go_to_the_requests_in_the_order_they_asked(kit_engine: AsyncEngine) -> None:
    url = kit_engine.url.render_as_string(hide_password=False)
    pool = await create_pg_pool(url, max_size=CONNECTIONS)
    try:
        overtaken = await _most_overtaken(pool)
        # The pool's shortcuts (fetchval and friends) take their turn too.
        assert await asyncio.gather(*(pool.fetchval("SELECT $1::int", i) for i in range(20))) == list(range(20))
    finally:
        await pool.close()
    assert overtaken <= CONNECTIONS - 1


@pytest.mark.parametrize(("pool_class", "served"), [(asyncpg.Pool, ["newcomer", "waiter"]), (FairPool, ["waiter", "newcomer"])])
async def test_a_request_asking_while_a_connection_comes_back_waits_its_turn(
    kit_engine: AsyncEngine, pool_class: type[asyncpg.Pool], served: list[str]
) -> None:
    """Why `FairPool` exists, step by step: a connection coming back wakes the request waiting
    for it, and a request that asks before that one runs took the connection (asyncpg's own
    pool), while the waiter went back to the end of the line. Here the newcomer is made ready to
    run just as the connection is put back (at the end of the pool's reset), every time."""
    newcomer_may_ask = asyncio.Event()

    async def reset(conn: asyncpg.Connection) -> None:
        newcomer_may_ask.set()  # the newcomer runs next, before the waiter wakes

    pool = pool_class(
        asyncpg_dsn(kit_engine.url.render_as_string(hide_password=False)),
        min_size=1,
        max_size=1,
        max_queries=50000,
        max_inactive_connection_lifetime=300,
        connect=None,
        setup=None,
        init=None,
        reset=reset,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    await pool
    order: list[str] = []
    held, give_back = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with pool.acquire():
            held.set()
            await give_back.wait()

    async def request(name: str) -> None:
        async with pool.acquire() as conn:
            order.append(name)
            await conn.execute("SELECT 1")

    async def newcomer() -> None:
        await newcomer_may_ask.wait()
        await request("newcomer")

    try:
        holding = asyncio.create_task(holder())
        await held.wait()
        waiting = asyncio.create_task(request("waiter"))
        asking = asyncio.create_task(newcomer())
        await asyncio.sleep(0.05)  # the waiter is in line for the connection
        assert order == []
        give_back.set()
        await asyncio.wait_for(asyncio.gather(holding, waiting, asking), timeout=10)
    finally:
        await pool.close()
    assert order == served


async def test_a_cancelled_wait_gives_its_turn_to_the_next(kit_engine: AsyncEngine) -> None:
    url = kit_engine.url.render_as_string(hide_password=False)
    pool = await create_pg_pool(url, max_size=1)
    try:
        held = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with pool.acquire():
                held.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await held.wait()
        waiting = asyncio.create_task(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        await task
        assert await asyncio.wait_for(pool.fetchval("SELECT 2"), timeout=5) == 2
        assert waiting.cancelled()
    finally:
        await pool.close()
