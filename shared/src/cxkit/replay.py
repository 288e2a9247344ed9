"""Rebuild a service's projections from the topics, from the beginning.

A projection names the consumer whose processed-events rows it owns, the topics and the
handlers that build it, and how to reset it. Only projection handlers run: a replay never
repeats side effects such as invitations or tasks, which are the service's own data."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.kafka.client import fetch_options
from cxkit.kafka.consumer import BatchHandler, EventConsumer
from cxkit.settings import ServiceSettings

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Projection:
    """What a replay rebuilds. `consumer_name` is the live consumer's name; the replay records
    its own progress as `<consumer_name>.replay`, so the live consumer still applies (with its
    side effects) every event it has not reached itself. Projection handlers must therefore be
    idempotent per row (upserts, ON CONFLICT DO NOTHING), which they are for redeliveries anyway."""

    consumer_name: str
    topics: list[str]
    handlers: dict[str, BatchHandler]
    reset: Callable[[AsyncSession], Awaitable[None]]
    description: str = ""


def replay_name(projection: Projection) -> str:
    return f"{projection.consumer_name}.replay"


async def replay(
    settings: ServiceSettings,
    session_factory: async_sessionmaker[AsyncSession],
    processed_model: type[Any],
    projections: list[Projection],
    progress: ProgressCallback | None = None,
) -> dict[str, int]:
    """Reset each projection and apply its topics from offset 0 up to their end.
    Returns the number of messages read per projection. Stop the service's consumers first."""
    counts: dict[str, int] = {}
    for projection in projections:
        async with session_factory() as session, session.begin():
            await projection.reset(session)
            await session.execute(delete(processed_model).where(processed_model.consumer == replay_name(projection)))
        counts[projection.consumer_name] = await _apply_from_start(
            settings, session_factory, processed_model, projection, progress
        )
    return counts


@contextlib.asynccontextmanager
async def from_the_start(
    settings: ServiceSettings, topics: Iterable[str], client_id: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A reader of every partition of these topics (those that exist), at their beginning,
    without a consumer group (it commits nothing), and those partitions."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        client_id=client_id,
        **fetch_options(settings),
    )
    try:
        await reader.start()
        known = await reader.topics()
        partitions = [TopicPartition(t, p) for t in topics if t in known for p in sorted(reader.partitions_for_topic(t) or [])]
        if partitions:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
        yield reader, partitions
    finally:
        with contextlib.suppress(Exception):
            await reader.stop()


async def at_end(reader: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    """Every partition read up to its high watermark as the last fetch reported it."""
    for tp in partitions:
        highwater = reader.highwater(tp)
        if highwater is None:
            highwater = (await reader.end_offsets([tp]))[tp]
        if await reader.position(tp) < highwater:
            return False
    return True


async def _apply_from_start(
    settings: ServiceSettings,
    session_factory: async_sessionmaker[AsyncSession],
    processed_model: type[Any],
    projection: Projection,
    progress: ProgressCallback | None,
) -> int:
    async with from_the_start(settings, projection.topics, f"{projection.consumer_name}-replay") as (reader, partitions):
        if not partitions:
            return 0
        # For progress only: some brokers (Tansu) under-report ListOffsets after a multi-record
        # batch, so the end is decided by the fetch's high watermark below, not by this.
        end = await reader.end_offsets(partitions)
        start = await reader.beginning_offsets(partitions)
        total = sum(max(end[tp] - start[tp], 0) for tp in partitions)
        applier = EventConsumer(
            name=replay_name(projection),
            topics=projection.topics,
            handlers=projection.handlers,
            settings=settings,
            session_factory=session_factory,
            processed_model=processed_model,
            send_dead_letters=False,
        )
        done = 0
        if progress:
            progress(projection.consumer_name, done, total)
        while True:
            batches = await reader.getmany(*partitions, timeout_ms=500, max_records=settings.consumer_max_records)
            batches = {tp: records for tp, records in batches.items() if records}
            if batches:
                await applier.process(batches)
                done += sum(len(r) for r in batches.values())
                total = max(total, done)
                if progress:
                    progress(projection.consumer_name, done, total)
                continue
            if await at_end(reader, partitions):
                break
        return done
