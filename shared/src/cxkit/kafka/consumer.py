"""Consumer runner: one DB transaction per poll, per-event idempotency, offsets committed
only after the DB commit, bad messages to `<topic>.dlq` with the reason, and the loop goes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.db import insert_new
from cxkit.events import CloudEvent, InvalidEvent, decode_event
from cxkit.events.registry import dlq_topic
from cxkit.kafka.client import ensure_topics, make_producer
from cxkit.metrics import CONSUMER_LAG, EVENTS_DUPLICATE, EVENTS_FAILED, EVENTS_HANDLED
from cxkit.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One valid event as it arrived."""

    event: CloudEvent
    payload: Any
    record: ConsumerRecord[bytes, bytes]


# A handler applies a run of consecutive events of one type, inside the batch's transaction.
BatchHandler = Callable[[AsyncSession, list[Delivery]], Awaitable[None]]
EventHandler = Callable[[AsyncSession, CloudEvent, Any], Awaitable[None]]


def per_event(handler: EventHandler) -> BatchHandler:
    """Adapt a one-event handler to the batch interface."""

    async def run(session: AsyncSession, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            await handler(session, d.event, d.payload)

    return run


class PermanentEventError(Exception):
    """The event is valid but can never be applied (e.g. it contradicts our data): DLQ it."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, ConnectionError, OSError, TimeoutError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT_ERRORS)


@dataclass
class EventConsumer:
    """Consumes `topics` as consumer group `name` and applies events with `handlers`."""

    name: str
    topics: list[str]
    handlers: dict[str, BatchHandler]
    settings: ServiceSettings
    session_factory: async_sessionmaker[AsyncSession]
    processed_model: type[Any]
    skip_sources: frozenset[str] = frozenset()
    # Off during a replay: bad messages were sent to the DLQ when they first came.
    send_dead_letters: bool = True
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False)
    _producer: AIOKafkaProducer | None = field(default=None, init=False)
    connected: bool = field(default=False, init=False)

    @property
    def assigned(self) -> bool:
        """Joined its group and holds partitions (so new events are being read)."""
        return self._consumer is not None and bool(self._consumer.assignment())

    async def _start(self) -> None:
        await ensure_topics(self.settings, self.topics)
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.name,
            client_id=f"{self.name}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.consumer_max_records,
            request_timeout_ms=15_000,
        )
        producer = make_producer(self.settings)
        try:
            await consumer.start()
            await producer.start()
        except Exception:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._consumer, self._producer = consumer, producer
        self.connected = True

    async def _close(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        self.connected = False
        for client in (consumer, producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after broker or database outages."""
        backoff = 0.2
        while True:
            try:
                if self._consumer is None:
                    await self._start()
                assert self._consumer is not None
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self.settings.consumer_max_records)
                if not batches:
                    continue
                try:
                    await self.process(batches)
                except Exception:
                    # Nothing was committed: rewind so the same messages come again.
                    for tp, records in batches.items():
                        self._consumer.seek(tp, records[0].offset)
                    raise
                await self._consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
                self._record_lag(batches)
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                # The client reconnects and rejoins the group by itself (after a failed commit
                # it takes its positions from the committed offsets again, so nothing is skipped).
                # Tearing it down mid-rejoin would leave a ghost member that stalls the rebalance.
                log.warning("consumer round failed (broker), retrying", extra={"consumer": self.name, "error": repr(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                log.warning("consumer round failed, retrying", extra={"consumer": self.name, "error": repr(exc)})
                if not _is_transient(exc):
                    await self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _record_lag(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        assert self._consumer is not None
        for tp, records in batches.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                CONSUMER_LAG.labels(self.name, tp.topic, tp.partition).set(max(highwater - records[-1].offset - 1, 0))

    async def process(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Apply one poll's messages. Raises only for transient failures (caller rewinds)."""
        deliveries: list[Delivery] = []
        dead: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for records in batches.values():
            for record in records:
                try:
                    event, payload = decode_event(record.value)
                except InvalidEvent as exc:
                    dead.append((record, exc.reason))
                    continue
                if event.type in self.handlers and event.source not in self.skip_sources:
                    deliveries.append(Delivery(event, payload, record))
        if deliveries:
            try:
                await self._apply(deliveries)
            except Exception as exc:
                if _is_transient(exc):
                    raise
                log.warning("batch failed, applying its events one by one", extra={"error": repr(exc)})
                for delivery in deliveries:
                    reason = await self._apply_alone(delivery)
                    if reason is not None:
                        dead.append((delivery.record, reason))
        for record, reason in dead:
            if self.send_dead_letters:
                await self._send_to_dlq(record, reason)
            else:
                log.info(
                    "skipping a bad message during replay",
                    extra={"topic": record.topic, "offset": record.offset, "reason": reason},
                )

    async def _apply(self, deliveries: list[Delivery]) -> None:
        """All events of the poll in one transaction; duplicates are filtered by the
        processed-events insert, which commits atomically with their effects."""
        async with self.session_factory() as session, session.begin():
            rows = {d.event.id: {"consumer": self.name, "event_id": d.event.id} for d in deliveries}
            fresh = await insert_new(session, self.processed_model.__table__, list(rows.values()), "event_id")
            todo: list[Delivery] = []
            for d in deliveries:
                if d.event.id in fresh:
                    fresh.discard(d.event.id)  # a duplicate inside the same poll runs once
                    todo.append(d)
            skipped = len(deliveries) - len(todo)
            if skipped:
                EVENTS_DUPLICATE.labels(self.name).inc(skipped)
            for run in _runs_by_type(todo):
                await self.handlers[run[0].event.type](session, run)
        for d in todo:
            EVENTS_HANDLED.labels(self.name, d.event.type).inc()

    async def _apply_alone(self, delivery: Delivery) -> str | None:
        """Retry one event a bounded number of times; returns the DLQ reason if it never applies."""
        attempts = self.settings.consumer_max_retries
        last: BaseException | None = None
        for attempt in range(attempts):
            try:
                await self._apply([delivery])
                return None
            except PermanentEventError as exc:
                return f"rejected by handler: {exc}"
            except Exception as exc:
                if _is_transient(exc):
                    raise
                last = exc
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        return f"handler failed after {attempts} attempts: {last!r}"[:1000]

    async def _send_to_dlq(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        assert self._producer is not None
        headers = [
            *(record.headers or []),
            ("dlq.reason", reason.encode()),
            ("dlq.original_topic", record.topic.encode()),
            ("dlq.original_partition", str(record.partition).encode()),
            ("dlq.original_offset", str(record.offset).encode()),
            ("dlq.consumer", self.name.encode()),
        ]
        await self._producer.send_and_wait(dlq_topic(record.topic), value=record.value, key=record.key, headers=headers)
        EVENTS_FAILED.labels(self.name, record.topic).inc()
        log.warning("message sent to DLQ", extra={"consumer": self.name, "topic": record.topic, "reason": reason})

    async def stop(self) -> None:
        await self._close()


def _runs_by_type(deliveries: list[Delivery]) -> list[list[Delivery]]:
    """Consecutive events of the same type, so handlers may batch without reordering."""
    runs: list[list[Delivery]] = []
    for d in deliveries:
        if runs and runs[-1][0].event.type == d.event.type:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs
