"""The kit's own fixtures: one throwaway PostgreSQL database for the session, holding the
platform tables (`cxkit.platform_models`) and two test-only tables, emptied after each test;
the run's dev broker (the root conftest's `broker`) and a topic of each test's own, so tests
never read each other's messages."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from sqlalchemy import BigInteger, String, Text, Uuid, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cxkit import testing
from cxkit.db import UTCDateTime, make_engine, make_session_factory, new_id, new_metadata, utcnow
from cxkit.dev_broker import DEV_BROKER_SETTINGS, DevBroker
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import CustomerUpdated
from cxkit.kafka.client import ensure_topics
from cxkit.kafka.consumer import BatchHandler, Delivery, EventConsumer
from cxkit.platform_models import ApiKeyMixin, IdempotencyKeyMixin, OutboxMixin, ProcessedEventMixin
from cxkit.settings import ServiceSettings
from cxkit.webhooks.models import WebhookDeliveryMixin, WebhookSubscriptionMixin

SOURCE = "urn:cxkit:kit-tests"


class Base(DeclarativeBase):
    metadata = new_metadata()


class ApiKey(ApiKeyMixin, Base):
    pass


class IdempotencyKey(IdempotencyKeyMixin, Base):
    pass


class Outbox(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


class WebhookSubscription(WebhookSubscriptionMixin, Base):
    pass


class WebhookDelivery(WebhookDeliveryMixin, Base):
    pass


class Note(Base):
    """A row a write makes (idempotency tests) and a list pages through (keyset tests)."""

    __tablename__ = "notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    body: Mapped[str] = mapped_column(Text)


class Label(Base):
    """Rows `insert_new` writes: a unique name, and columns it leaves to the defaults."""

    __tablename__ = "labels"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    made_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppliedEvent(Base):
    """Each event a test handler applied, in the order it applied them (`seq`)."""

    __tablename__ = "applied_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    applier: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(BigInteger)


@pytest.fixture(scope="session")
async def kit_engine() -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database holding the tables above, dropped after the session."""
    name = await testing.create_database("cxkit_test")
    engine = make_engine(testing.asyncpg_url(testing.database_dsn(name)), pool_size=4, max_overflow=4)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield engine
    finally:
        await engine.dispose()
        await testing.drop_database(name)


@pytest.fixture
async def sessions(kit_engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the kit's database; every table is emptied after the test (DELETE: on tables
    this small it is many times faster than TRUNCATE, which makes new files for each)."""
    yield make_session_factory(kit_engine)
    async with kit_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())


@pytest.fixture(scope="session")
def kit_settings(kit_engine: AsyncEngine, broker: DevBroker) -> ServiceSettings:
    return ServiceSettings(
        service_name="cxkit-tests",
        database_url=kit_engine.url.render_as_string(hide_password=False),
        kafka_bootstrap_servers=broker.bootstrap,
        **DEV_BROKER_SETTINGS,
        consumer_max_retries=2,
        log_json=False,
    )


@pytest.fixture
async def topic(kit_settings: ServiceSettings) -> str:
    """A new topic (3 partitions) and its DLQ, for this test alone."""
    name = f"cxkit-test.{uuid.uuid4().hex[:12]}"
    await ensure_topics(kit_settings, [name])
    return name


def customer_event(customer_id: uuid.UUID, version: int, name: str | None = None, **envelope: Any) -> bytes:
    """A `customer.updated` CloudEvent (encoded) of `customer_id` at `version`."""
    data = CustomerUpdated(id=customer_id, name=name or f"v{version}", version=version, changed=["name"])
    event = new_event("customer.updated", source=envelope.pop("source", SOURCE), subject=str(customer_id), data=data)
    for attribute, value in envelope.items():
        setattr(event, attribute, value)
    return encode_event(event)


def applying(applier: str) -> BatchHandler:
    """A handler that records each event it is given (as `applier`), in order."""

    async def apply(session: AsyncSession, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            session.add(
                AppliedEvent(
                    applier=applier, event_id=d.event.id, customer_id=d.payload.id, name=d.payload.name, version=d.payload.version
                )
            )
            await session.flush()  # one INSERT per event, so `seq` follows the order applied

    return apply


async def applied(sessions: async_sessionmaker[AsyncSession], applier: str) -> list[AppliedEvent]:
    async with sessions() as session:
        stmt = select(AppliedEvent).where(AppliedEvent.applier == applier).order_by(AppliedEvent.seq)
        return list((await session.scalars(stmt)).all())


async def publish(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]], **headers: bytes) -> None:
    """(key, value) messages, in order, from a plain producer (as another system would send them):
    sent together, so they reach the broker in batches of several records, as the relay's do."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value=value, key=key, headers=list(headers.items())) for key, value in messages]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    at_least: int = 0,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message on `topic` (no consumer group): waits for `at_least` of them, then reads
    each partition to its end, so a message sent twice shows up twice. Partition by partition,
    each in offset order."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await reader.topics()  # loads the cluster's metadata
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in (await reader.getmany(*partitions, timeout_ms=100)).values():
                records.extend(batch)
            if len(records) >= at_least and await _read_to_end(reader, partitions):
                break
    finally:
        await reader.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def _read_to_end(reader: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    # The high watermark a fetch reported, not ListOffsets: the dev broker under-reports the
    # latter after a batch of several records (see cxkit.replay).
    for tp in partitions:
        highwater = reader.highwater(tp)
        if highwater is None or await reader.position(tp) < highwater:
            return False
    return True


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """Partition -> the offset consumer group `group` committed on `topic`."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        await probe.topics()
        partitions = sorted(probe.partitions_for_topic(topic) or [])
        return {p: await probe.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await probe.stop()


@contextlib.asynccontextmanager
async def consuming(
    settings: ServiceSettings, engine: AsyncEngine, name: str, topic: str, handler: BatchHandler
) -> AsyncIterator[EventConsumer]:
    """An EventConsumer named `name` applying `customer.updated` from `topic` with `handler`,
    running as a task while the block runs."""
    consumer = EventConsumer(
        name=name,
        topics=[topic],
        handlers={"customer.updated": handler},
        settings=settings,
        session_factory=make_session_factory(engine),
        processed_model=ProcessedEvent,
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        await settle(task)
        await consumer.stop()


async def settle(task: asyncio.Task[Any]) -> None:
    """Cancel a background task (a relay or consumer loop) and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
