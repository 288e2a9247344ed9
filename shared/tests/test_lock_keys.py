"""`cxkit.db.lock_keys` on real PostgreSQL: holders of one key wait for each other and holders
of different keys do not; a large set takes one lock whatever its size (a dozen batches of a
thousand addresses used to fill the server's lock table: "out of shared memory"); a large set
and a small one exclude each other; a transaction holding the namespace's shared lock never
upgrades it, so two such transactions cannot deadlock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit.db import LOCK_KEYS_MAX, lock_keys, make_engine, make_session_factory

WAIT = 0.4  # long enough for a lock request to be queued; a granted one answers in milliseconds


@contextlib.asynccontextmanager
async def holding(sessions: async_sessionmaker[AsyncSession], *keys: str) -> AsyncIterator[AsyncSession]:
    """A transaction that holds the locks of `keys` in the "email" namespace until the block ends."""
    async with sessions() as session, session.begin():
        await lock_keys(session, "email", keys)
        yield session


async def advisory_locks(session: AsyncSession) -> int:
    """How many advisory locks this session's backend holds."""
    query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted")
    return int((await session.execute(query)).scalar_one())


async def waits(coroutine: asyncio.Task[None]) -> bool:
    """True if the task is still blocked after `WAIT` seconds."""
    await asyncio.sleep(WAIT)
    return not coroutine.done()


def addresses(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(n)]


async def test_a_large_set_holds_one_lock_and_a_small_one_a_lock_per_key_and_the_namespace(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with holding(sessions, *addresses("large", 5_000)) as session:
        assert await advisory_locks(session) == 1
    async with holding(sessions, *addresses("small", LOCK_KEYS_MAX)) as session:
        assert await advisory_locks(session) == LOCK_KEYS_MAX + 1
    async with holding(sessions) as session:  # no key: nothing taken
        assert await advisory_locks(session) == 0


async def test_the_same_key_waits_and_a_different_key_does_not(sessions: async_sessionmaker[AsyncSession]) -> None:
    async def take(*keys: str) -> None:
        async with holding(sessions, *keys):
            pass

    async with holding(sessions, "a@example.com", "b@example.com"):
        await asyncio.wait_for(take("c@example.com"), timeout=5)  # another key: at once
        same = asyncio.create_task(take("c@example.com", "b@example.com"))
        assert await waits(same)
    await asyncio.wait_for(same, timeout=5)


async def test_a_large_set_and_a_small_one_exclude_each_other(sessions: async_sessionmaker[AsyncSession]) -> None:
    async def take(*keys: str) -> None:
        async with holding(sessions, *keys):
            pass

    many = addresses("many", 1_000)
    async with holding(sessions, "outside@example.com"):  # a key the large set does not name
        large = asyncio.create_task(take(*many))
        assert await waits(large)
    await asyncio.wait_for(large, timeout=5)

    async with holding(sessions, *many):
        outside, inside = asyncio.create_task(take("outside@example.com")), asyncio.create_task(take(many[7]))
        other_large = asyncio.create_task(take(*addresses("other", 500)))
        assert await waits(outside) and not inside.done() and not other_large.done()
    await asyncio.wait_for(asyncio.gather(outside, inside, other_large), timeout=5)


async def test_a_transaction_holding_the_shared_lock_takes_a_later_large_set_key_by_key(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Upgrading would deadlock here: the second transaction holds the shared lock and waits for
    `a`, which the first holds. Key by key, the first finishes and the second goes on."""
    async with sessions() as first, first.begin():
        await lock_keys(first, "email", ["a@example.com"])
        second_waits_for_a = asyncio.Event()

        async def second() -> None:
            async with sessions() as session, session.begin():
                await lock_keys(session, "email", ["b@example.com"])
                second_waits_for_a.set()
                await lock_keys(session, "email", ["a@example.com"])

        task = asyncio.create_task(second())
        await second_waits_for_a.wait()
        assert await waits(task)
        await asyncio.wait_for(lock_keys(first, "email", addresses("later", 200)), timeout=5)
        assert await advisory_locks(first) == 1 + 1 + 200  # the namespace, `a`, and the later keys
    await asyncio.wait_for(task, timeout=5)


async def test_a_large_set_after_a_large_set_in_one_transaction_and_then_a_small_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        await lock_keys(session, "email", addresses("x", 100))
        await lock_keys(session, "email", addresses("y", 100))
        await lock_keys(session, "email", ["z@example.com"])
        assert await advisory_locks(session) == 1 + 1 + 1  # the namespace in both modes, and `z`


async def test_many_concurrent_large_sets_all_succeed(kit_engine: AsyncEngine) -> None:
    """Twenty transactions of a thousand addresses each, on twenty connections (a service's
    pool): twenty thousand key locks would not fit in a default server's lock table (about
    64 x max_connections), and every transaction past it failed with "out of shared memory"."""
    engine = make_engine(kit_engine.url.render_as_string(hide_password=False), pool_size=20, max_overflow=0)
    sessions = make_session_factory(engine)
    started = asyncio.Barrier(20)

    async def batch(i: int) -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("SELECT 1"))
            await started.wait()  # all twenty in a transaction before any takes its locks
            await lock_keys(session, "email", addresses(f"batch{i}-", 1_000))
            await session.execute(text("SELECT pg_sleep(0.01)"))

    try:
        await asyncio.wait_for(asyncio.gather(*(batch(i) for i in range(20))), timeout=60)
    finally:
        await engine.dispose()
