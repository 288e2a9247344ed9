"""`outbox_batch`: the events added inside it are written in one statement when it ends, in
the order they were added and after the rows the session already held, exactly as `add_event`
writes them one by one; nothing is written when the block fails."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.events.payloads import CustomerUpdated
from cxkit.kafka.outbox import add_event, outbox_batch

from .conftest import SOURCE, Outbox

Sessions = async_sessionmaker[AsyncSession]


def _add(session: AsyncSession, customer_id: uuid.UUID, version: int) -> uuid.UUID:
    return add_event(
        session,
        Outbox,
        "customer.updated",
        source=SOURCE,
        subject=customer_id,
        data=CustomerUpdated(id=customer_id, version=version, changed=["name"]),
    )


async def _rows(sessions: Sessions) -> list[Outbox]:
    async with sessions() as session:
        return list((await session.scalars(select(Outbox).order_by(Outbox.id))).all())


async def test_a_batch_writes_what_add_event_writes_in_the_order_added(sessions: Sessions) -> None:
    customer = uuid.uuid4()
    async with sessions() as session, session.begin():
        one_by_one = [_add(session, customer, 1)]  # held by the session before the block
        async with outbox_batch(session, Outbox):
            batched = [_add(session, customer, v) for v in (2, 3, 4)]
            written = await session.scalars(select(Outbox.event_id).where(Outbox.event_id.in_(batched)))
            assert written.all() == []  # not before the block ends
        one_by_one.append(_add(session, customer, 5))
    rows = await _rows(sessions)
    assert [r.event_id for r in rows] == [one_by_one[0], *batched, one_by_one[1]]
    plain, *in_batch, _ = rows
    for row in in_batch:
        assert (row.topic, row.key, row.event_type) == (plain.topic, plain.key, plain.event_type)
        assert row.headers == plain.headers and row.headers["ce_type"] == "customer.updated"
        assert row.sent_at is None and row.attempts == 0
        assert b'"version":' in row.value and row.created_at is not None


async def test_a_failed_block_writes_nothing(sessions: Sessions) -> None:
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin(), outbox_batch(session, Outbox):
            _add(session, uuid.uuid4(), 1)
            raise RuntimeError("the poll failed")
    assert await _rows(sessions) == []
