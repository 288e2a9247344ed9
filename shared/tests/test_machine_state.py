"""The machine's state that a run prints at its first failure (the root conftest): it must tell
a server that went away, a leaked transaction holding locks and a session stuck behind it from a
broken test."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from cxkit import testing
from cxkit.dev_broker import DevBroker, free_port

SESSIONS = re.compile(
    r"postgres: answers; (?P<total>\d+) client sessions, (?P<idle>\d+) idle in a transaction, "
    r"(?P<waiting>\d+) waiting on a lock, oldest transaction (?P<oldest>\d+) s"
)


def sessions(state: list[str]) -> dict[str, int]:
    found = [m for line in state if (m := SESSIONS.fullmatch(line))]
    assert len(found) == 1, state
    return {name: int(value) for name, value in found[0].groupdict().items()}


async def test_a_transaction_left_open_is_reported_with_its_age() -> None:
    quiet = sessions(await asyncio.to_thread(testing.machine_state))
    holder = await asyncpg.connect(testing.admin_dsn())
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT pg_advisory_xact_lock(424241)")
        await asyncio.sleep(1.1)
        open_one = sessions(await asyncio.to_thread(testing.machine_state))
        await transaction.rollback()
    finally:
        await holder.close()
    assert open_one["idle"] == quiet["idle"] + 1 and open_one["total"] == quiet["total"] + 1
    assert open_one["oldest"] >= 1


async def test_a_waiting_session_and_servers_that_do_not_answer_are_reported(broker: DevBroker) -> None:
    holder = await asyncpg.connect(testing.admin_dsn())
    waiter = await asyncpg.connect(testing.admin_dsn())
    try:
        await holder.execute("SELECT pg_advisory_lock(424242)")
        blocked = asyncio.create_task(waiter.execute("SELECT pg_advisory_lock(424242)"))
        await asyncio.sleep(0.5)
        state = await asyncio.to_thread(testing.machine_state, broker.bootstrap, ("127.0.0.1", free_port()))
        await holder.execute("SELECT pg_advisory_unlock(424242)")
        await blocked
        await waiter.execute("SELECT pg_advisory_unlock(424242)")
    finally:
        await holder.close()
        await waiter.close()
    assert sessions(state)["waiting"] == 1
    assert f"broker {broker.bootstrap}: answers" in state
    assert any(line.startswith("redis 127.0.0.1:") and line.endswith(": does not answer") for line in state)
    assert any(line.startswith("disk (work tree): ") and " GiB free of " in line for line in state)
    assert any(line.startswith("memory available: ") for line in state)


def test_a_postgres_that_does_not_answer_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CX_TEST_PG_DSN", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    state = testing.machine_state()
    assert any(line.startswith("postgres: does not answer") for line in state)
