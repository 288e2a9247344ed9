"""The housekeeping (`cxkit.service_app.housekeep`) against PostgreSQL: what it deletes past its
retention, and what it keeps. The ids of applied events are forgotten in batches."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.db import utcnow
from cxkit.kafka.consumer import forget_processed_events
from cxkit.service_app import housekeep
from cxkit.settings import ServiceSettings

from .conftest import IdempotencyKey, Outbox, ProcessedEvent

Sessions = async_sessionmaker[AsyncSession]


async def _remember(sessions: Sessions, consumer: str, ids: list[str], at: dt.datetime) -> None:
    async with sessions() as session, session.begin():
        await session.execute(insert(ProcessedEvent), [{"consumer": consumer, "event_id": i, "processed_at": at} for i in ids])


async def _remembered(sessions: Sessions, consumer: str) -> set[str]:
    async with sessions() as session:
        return set((await session.scalars(select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == consumer))).all())


async def test_ids_of_events_applied_before_the_retention_are_forgotten_in_batches(sessions: Sessions) -> None:
    now, consumers = utcnow(), [f"kit-forget-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    old = [f"old-{i}" for i in range(23)]
    fresh = [f"fresh-{i}" for i in range(4)]
    for consumer in consumers:
        await _remember(sessions, consumer, old, now - dt.timedelta(days=40))
        await _remember(sessions, consumer, fresh, now - dt.timedelta(days=2))
    forgotten = await forget_processed_events(sessions, ProcessedEvent, now - dt.timedelta(days=35), batch=10)
    assert forgotten == 2 * len(old)
    for consumer in consumers:
        assert await _remembered(sessions, consumer) == set(fresh)
    assert await forget_processed_events(sessions, ProcessedEvent, now - dt.timedelta(days=35), batch=10) == 0


async def test_housekeeping_deletes_what_is_past_its_retention_and_keeps_the_rest(
    sessions: Sessions, kit_settings: ServiceSettings
) -> None:
    settings = kit_settings.model_copy(update={"processed_events_retention_days": 10, "outbox_retention_hours": 24})
    now, consumer = utcnow(), f"kit-housekeeping-{uuid.uuid4().hex[:8]}"
    await _remember(sessions, consumer, ["kept"], now - dt.timedelta(days=9))
    await _remember(sessions, consumer, ["forgotten"], now - dt.timedelta(days=11))
    sent_long_ago, sent_now, unsent = (uuid.uuid4() for _ in range(3))
    async with sessions() as session, session.begin():
        for event_id, sent_at in ((sent_long_ago, now - dt.timedelta(hours=25)), (sent_now, now), (unsent, None)):
            session.add(
                Outbox(
                    event_id=event_id,
                    topic="t",
                    key="k",
                    event_type="x",
                    value=b"{}",
                    headers={},
                    created_at=now - dt.timedelta(days=2),
                    sent_at=sent_at,
                )
            )
    await housekeep(settings, sessions, Outbox, IdempotencyKey, None, ProcessedEvent)
    assert await _remembered(sessions, consumer) == {"kept"}
    async with sessions() as session:
        left = set(
            (await session.scalars(select(Outbox.event_id).where(Outbox.event_id.in_([sent_long_ago, sent_now, unsent])))).all()
        )
        assert left == {sent_now, unsent}
