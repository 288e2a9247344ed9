"""Consumer runner: one DB transaction per poll, per-event idempotency, offsets committed
only after the DB commit, bad messages to `<topic>.dlq` with the reason, and the loop goes on.

The runner's own statements per poll do not grow with its size: BEGIN, one processed-events
insert (`INSERT ... SELECT FROM unnest(...)`, prepared once per connection), COMMIT. Handlers
get the poll's runs of events and do likewise: `session_connection(session)` gives them the
asyncpg connection under the session, inside the poll's transaction, for `unnest`/COPY
statements that asyncpg prepares once and SQLAlchemy never compiles. While a poll is being
applied, the next one is fetched and decoded (see `EventConsumer._rounds`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel, ValidationError, create_model
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit import tracing
from cxkit.db import is_database_busy, session_connection, utcnow
from cxkit.events import CloudEvent, InvalidEvent, decode_event
from cxkit.events.envelope import refuse_nul
from cxkit.events.registry import dlq_topic, payload_model
from cxkit.kafka.client import MAX_MESSAGE_BYTES, ensure_topics, failure_kind, fetch_options, make_producer
from cxkit.memory import collector_paused, release_freed_memory
from cxkit.metrics import CONSUMER_ERRORS, CONSUMER_LAG, DLQ_MESSAGES, EVENTS_DUPLICATE, EVENTS_HANDLED
from cxkit.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One valid event as it arrived."""

    event: CloudEvent
    payload: Any
    record: ConsumerRecord[bytes, bytes]


@dataclass(slots=True)
class Decoded:
    """A poll's messages: the valid events this consumer applies, and the invalid ones (with
    the reason) for the DLQ. Valid events of other types or skipped sources are left out."""

    deliveries: list[Delivery] = field(default_factory=list)
    dead: list[tuple[ConsumerRecord[bytes, bytes], str]] = field(default_factory=list)


@dataclass(slots=True)
class _Poll:
    batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    decoded: Decoded = field(default_factory=Decoded)
    applied: bool = False  # its transaction committed (its offsets may not be yet)


# A handler applies a run of consecutive events of one type, inside the batch's transaction.
BatchHandler = Callable[[AsyncSession, list[Delivery]], Awaitable[None]]


class PermanentEventError(Exception):
    """The event is valid but can never be applied (e.g. it contradicts our data): DLQ it."""


def storable_json(value: Any, field: str, max_bytes: int) -> bytes:
    """`value` as the JSON a JSONB column takes, or PermanentEventError naming `field`: orjson
    reads 1,024 levels but writes 254, so decoded free JSON may not be writable again; and
    more than `max_bytes` of it is refused."""
    try:
        written = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise PermanentEventError(f"{field}: not storable as JSON: {exc}") from None
    if len(written) > max_bytes:
        raise PermanentEventError(f"{field}: at most {max_bytes} bytes of JSON")
    return written


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
    # The same outages met on the asyncpg connection itself (see cxkit.db.session_connection): the
    # connection is gone, or the server is shutting down or not yet accepting connections.
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


def _is_transient(exc: BaseException) -> bool:
    """The poll may apply when tried again: the broker or the database is away, or the database
    refused the poll's transaction for now (a deadlock, a full lock table): rewound and retried
    as a whole, never split up and sent to the DLQ."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and "connection is closed" in str(exc):
        return True
    return isinstance(exc, TRANSIENT_ERRORS) or is_database_busy(exc)


@functools.cache
def _typed_envelope(event_type: str) -> type[CloudEvent] | None:
    """The envelope with `data` typed as the event type's payload: the envelope and its
    payload validated in one pass."""
    model = payload_model(event_type)
    if model is None:
        return None
    name = "".join(part.title() for part in event_type.replace(".", "_").split("_")) + "Envelope"
    envelope: type[CloudEvent] = create_model(name, __base__=CloudEvent, data=(model, ...))
    return envelope


class EventDecoder:
    """`decode_event` for the event types a consumer handles, in one validation per event.

    Parsing stays orjson's and validation stays pydantic's in Python mode, as in
    `decode_event`, so exactly the same messages are accepted; anything that fails here is
    decoded again by `decode_event`, which names the reason."""

    def __init__(self, event_types: Iterable[str]) -> None:
        self._envelopes = {t: e for t in event_types if (e := _typed_envelope(t)) is not None}

    def decode(self, raw: bytes | None) -> tuple[CloudEvent, BaseModel]:
        if raw is not None:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                try:
                    envelope = self._envelopes.get(doc.get("type"))  # type: ignore[arg-type]
                except TypeError:  # a list or object: no type (decode_event says why), and costs nothing otherwise
                    envelope = None
                if envelope is not None:
                    try:
                        event = envelope.model_validate(doc)
                    except ValidationError:
                        pass
                    else:
                        refuse_nul(raw, doc)
                        return event, event.data
        return decode_event(raw)


# How many remembered event ids one statement of `forget_processed_events` deletes: short
# transactions, so the consumers' inserts never wait long behind a large deletion.
FORGET_BATCH = 10_000


async def forget_processed_events(
    session_factory: async_sessionmaker[AsyncSession], processed_model: type[Any], before: Any, batch: int = FORGET_BATCH
) -> int:
    """Delete the ids of events applied before `before` (every consumer's), `batch` rows per
    transaction; returns how many went. The rows are found through the BRIN index on
    `processed_at` (they are written in time order), so a pass over a table of millions costs
    a few pages per batch, and the consumers' inserts keep one small index entry to maintain."""
    table = processed_model.__table__
    stmt = f"DELETE FROM {table.name} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table.name} WHERE processed_at < $1 LIMIT $2))"
    forgotten = 0
    while True:
        async with session_factory() as session, session.begin():
            conn = await session_connection(session)
            status = await conn.execute(stmt, before, batch)
        deleted = int(status.rsplit(" ", 1)[-1])
        forgotten += deleted
        if deleted < batch:
            return forgotten


# A consumer with `consumer_idle_fetch_max_wait_ms` set fetches with that wait once no message
# came for this long.
IDLE_AFTER_S = 1.0


class _FetchPace:
    """The wait a consumer's fetches ask the broker for: `consumer_fetch_max_wait_ms` while
    messages come, `consumer_idle_fetch_max_wait_ms` (when set) after IDLE_AFTER_S without one.

    aiokafka takes the wait once, when the consumer is made; its fetcher reads it from
    `_fetch_max_wait_ms` for each request it builds, so that is what changes here (aiokafka is
    pinned; shared/tests/test_idle_fetch.py checks the requests it sends)."""

    __slots__ = ("_busy_ms", "_fetcher", "_idle", "_idle_ms", "_last_message")

    def __init__(self, consumer: AIOKafkaConsumer, settings: ServiceSettings) -> None:
        self._fetcher = consumer._fetcher
        self._busy_ms = settings.consumer_fetch_max_wait_ms
        self._idle_ms = settings.consumer_idle_fetch_max_wait_ms
        self._last_message = time.monotonic()
        self._idle = False
        if self._idle_ms is not None:
            self._fetcher._fetch_max_wait_ms = self._busy_ms

    def polled(self, messages: bool) -> None:
        """After each poll: whether it brought messages."""
        if self._idle_ms is None:
            return
        if messages:
            self._last_message = time.monotonic()
            if self._idle:
                self._idle = False
                self._fetcher._fetch_max_wait_ms = self._busy_ms
        elif not self._idle and time.monotonic() - self._last_message >= IDLE_AFTER_S:
            self._idle = True
            self._fetcher._fetch_max_wait_ms = self._idle_ms


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
    _trim_due: bool = field(default=False, init=False)  # polls applied since memory was last given back
    # Per assigned partition, the offset of the first message not applied yet (see _record_lag).
    _applied_to: dict[TopicPartition, int] = field(default_factory=dict, init=False)
    _lag_recorded: float = field(default=-float("inf"), init=False)  # time.monotonic()
    _decoder: EventDecoder = field(init=False)
    _insert_processed: str = field(init=False)

    def __post_init__(self) -> None:
        self._decoder = EventDecoder(self.handlers)
        # One statement for the whole poll; its text never changes, so asyncpg prepares it
        # once per connection.
        table = self.processed_model.__table__.name
        self._insert_processed = (
            f"INSERT INTO {table} (consumer, event_id, processed_at) "
            "SELECT $1, e, $3 FROM unnest($2::text[]) AS e ON CONFLICT DO NOTHING RETURNING event_id"
        )

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
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
            **fetch_options(self.settings),
            session_timeout_ms=self.settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=self.settings.consumer_session_timeout_ms // 3,
            request_timeout_ms=15_000,
        )
        # It only sends dead letters, each sized by `dead_letter_message`: the producer's own limit
        # would refuse the copy of an original larger than MAX_MESSAGE_BYTES that the broker took.
        producer = make_producer(self.settings, max_message_bytes=KAFKA_MAX_INT32)
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

        def committed() -> None:
            nonlocal backoff
            backoff = 0.2

        while True:
            try:
                if self._consumer is None:
                    await self._start()
                assert self._consumer is not None
                await self._rounds(self._consumer, committed)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                CONSUMER_ERRORS.labels(self.name, "broker").inc()
                # The client reconnects and rejoins the group by itself (after a failed commit
                # it takes its positions from the committed offsets again, so nothing is skipped).
                # Tearing it down mid-rejoin would leave a ghost member that stalls the rebalance.
                log.warning("consumer round failed (broker), retrying", extra={"consumer": self.name, "error": repr(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                CONSUMER_ERRORS.labels(self.name, failure_kind(exc)).inc()
                log.warning("consumer round failed, retrying", extra={"consumer": self.name, "error": repr(exc)})
                if not _is_transient(exc):
                    await self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _rounds(self, consumer: AIOKafkaConsumer, committed: Callable[[], None]) -> None:
        """Poll, decode, apply and commit (calling `committed` after each poll) until a round
        fails: then rewind to the first message not applied, and raise.

        Polls are applied one after the other, each in its own transaction followed by its
        offset commit. While one poll is being applied (mostly waiting for the database), the
        next one is fetched and decoded: that work does not depend on the database."""
        in_flight: asyncio.Task[None] | None = None
        pending: list[_Poll] = []  # fetched, offsets not committed yet; oldest first
        pace = _FetchPace(consumer, self.settings)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=self.settings.consumer_max_records)
                pace.polled(bool(batches))
                if batches:
                    poll = _Poll(batches)
                    pending.append(poll)  # from here on, rewound should anything fail
                    for tp, records in batches.items():
                        self._applied_to.setdefault(tp, records[0].offset)
                if time.monotonic() - self._lag_recorded >= LAG_INTERVAL_S:
                    # Also while nothing commits (idle, or the database away), so lag shows there.
                    self._record_lag(consumer)
                if in_flight is not None and in_flight.done():
                    in_flight, done = None, in_flight
                    done.result()  # its failure, if it failed
                    committed()
                if not batches:
                    if in_flight is None and self._trim_due:
                        self._trim_due = not release_freed_memory(interval_s=0)
                    continue
                poll.decoded = self.decode(batches)
                if in_flight is not None:
                    in_flight, previous = None, in_flight
                    await previous
                    committed()
                in_flight = asyncio.create_task(self._finish(consumer, poll, pending))
        except BaseException as exc:
            if in_flight is not None:
                if isinstance(exc, asyncio.CancelledError):
                    in_flight.cancel()
                # Let it end before rewinding: once its transaction committed it must not be
                # applied again by this member (a redelivery would do nothing, but cost a round).
                with contextlib.suppress(BaseException):
                    await in_flight
            self._rewind(consumer, [p for p in pending if not p.applied])
            raise

    async def _finish(self, consumer: AIOKafkaConsumer, poll: _Poll, pending: list[_Poll]) -> None:
        """Apply a decoded poll (one transaction), then commit its offsets. The collector is
        paused meanwhile (`collector_paused`): the poll's events and rows, and the next poll
        decoded while this one waits for the database, live until then."""
        with collector_paused():
            await self.apply(poll.decoded)
        poll.applied = True
        offsets = {tp: records[-1].offset + 1 for tp, records in poll.batches.items()}
        await consumer.commit(offsets)
        pending.remove(poll)
        self._applied_to.update(offsets)
        self._record_lag(consumer)
        # What the poll allocated is free now: give it back, or the service keeps the peak of
        # every burst it has lived through (at most once a second during a burst, and once
        # when it ends: see _rounds).
        self._trim_due = not release_freed_memory()

    def _rewind(self, consumer: AIOKafkaConsumer, polls: list[_Poll]) -> None:
        """Seek back to the first message of these polls, so they come again."""
        first: dict[TopicPartition, int] = {}
        for poll in polls:
            for tp, records in poll.batches.items():
                first[tp] = min(first.get(tp, records[0].offset), records[0].offset)
        assigned = consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:  # a partition taken away in a rebalance restarts from its committed offset
                with contextlib.suppress(Exception):
                    consumer.seek(tp, offset)

    def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        """`consumer_lag` of every partition this member holds: the partition's end (as the
        last fetch saw it) less the first offset not applied. A partition no message came from
        since it was assigned is caught up. Partitions taken away in a rebalance lose their
        series here (their new owner reports them)."""
        self._lag_recorded = time.monotonic()
        assigned = consumer.assignment()
        for tp in [tp for tp in self._applied_to if tp not in assigned]:
            del self._applied_to[tp]
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))
        for tp in assigned:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(highwater - self._applied_to.get(tp, highwater), 0)
                CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(lag)

    async def process(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Apply one poll's messages. Raises only for transient failures (caller rewinds)."""
        await self.apply(self.decode(batches))

    def decode(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> Decoded:
        """A poll's messages as the events to apply and the messages that are not valid events."""
        decoded = Decoded()
        for records in batches.values():
            for record in records:
                try:
                    event, payload = self._decoder.decode(record.value)
                except InvalidEvent as exc:
                    decoded.dead.append((record, exc.reason))
                    continue
                if event.type in self.handlers and event.source not in self.skip_sources:
                    decoded.deliveries.append(Delivery(event, payload, record))
        return decoded

    async def apply(self, decoded: Decoded) -> None:
        """Apply a decoded poll in one transaction (event by event, a bounded number of times
        each, should the whole fail), then send the bad messages to the DLQ. Raises only for
        transient failures (the caller rewinds)."""
        deliveries = decoded.deliveries
        dead = list(decoded.dead)
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
        # A span around the poll's transaction when spans are recorded (cxkit.tracing)
        with tracing.consuming(
            f"{self.name} process", deliveries, _traceparent_of, **{"messaging.batch.message_count": len(deliveries)}
        ):
            async with self.session_factory() as session, session.begin():
                conn = await session_connection(session)
                event_ids = list(dict.fromkeys(d.event.id for d in deliveries))
                fresh = {row[0] for row in await conn.fetch(self._insert_processed, self.name, event_ids, utcnow())}
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
        for event_type, count in Counter(d.event.type for d in todo).items():
            EVENTS_HANDLED.labels(self.name, event_type).inc(count)

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
        if len(reason) > DLQ_REASON_MAX_CHARS:
            reason = reason[: DLQ_REASON_MAX_CHARS - 1] + "…"
        letter = [
            ("dlq.reason", reason.encode()),
            ("dlq.original_topic", record.topic.encode()),
            ("dlq.original_partition", str(record.partition).encode()),
            ("dlq.original_offset", str(record.offset).encode()),
            ("dlq.consumer", self.name.encode()),
        ]
        if record.timestamp is not None and record.timestamp >= 0:  # -1: a message written without one
            # When the original was published (ms): `dlq redrive` judges by it whether the topic's
            # other consumers may have forgotten the event, not by when this consumer got to it.
            letter.append((ORIGINAL_TIMESTAMP, str(record.timestamp).encode()))
        key, value, headers = dead_letter_message(record, letter)
        try:
            await self._producer.send_and_wait(dlq_topic(record.topic), value=value, key=key, headers=headers)
        except (MessageSizeTooLargeError, RecordListTooLargeError):
            # The DLQ topic takes less than its source (its own `max.message.bytes`): the letter
            # without the original, which stays at the offset its headers name.
            key, value, headers = _bare_dead_letter(record, letter)
            await self._producer.send_and_wait(dlq_topic(record.topic), value=value, key=key, headers=headers)
        DLQ_MESSAGES.labels(self.name, record.topic, dlq_reason_kind(reason)).inc()
        extra = {"consumer": self.name, "topic": record.topic, "offset": record.offset, "reason": reason}
        if headers[-1][0] == TRUNCATED:
            extra["truncated"] = headers[-1][1].decode()
        log.warning("message sent to DLQ", extra=extra)

    async def stop(self) -> None:
        await self._close()


# How often `consumer_lag` is refreshed while no poll commits (each commit refreshes it too).
LAG_INTERVAL_S = 1.0

# The longest DLQ reason sent (and logged): some name the event's type, which may be of any length.
DLQ_REASON_MAX_CHARS = 1000
KAFKA_MAX_INT32 = 2**31 - 1  # no size Kafka's protocol can state is larger

# A dead letter whose original did not fit whole says so in its last header: `value` (the value is
# its first bytes) or `all` (no value, key or original headers); `dlq.original_value_bytes` before it.
TRUNCATED = "dlq.truncated"
ORIGINAL_VALUE_BYTES = "dlq.original_value_bytes"
# The original message's own timestamp (ms since the epoch, as Kafka gives it), when it had one.
ORIGINAL_TIMESTAMP = "dlq.original_timestamp"

Headers = list[tuple[str, bytes]]


def _message_bytes(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> int:
    """The size aiokafka's producer checks against its `max_request_size` (an upper bound of a
    batch holding the message alone)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))


def dead_letter_message(
    record: ConsumerRecord[bytes, bytes], letter: Headers, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[bytes | None, bytes | None, Headers]:
    """The key, value and headers of `record`'s DLQ copy: the original's, plus the DLQ's headers
    `letter`. The copy may take `max_bytes` (what brokers take by default), or as much as the
    original took when that was more (the broker took it). When it does not fit, the value is cut
    to fit (`dlq.truncated: value`); when even the key and headers do not, the copy is the DLQ's
    headers alone (`dlq.truncated: all`). Either way `dlq.original_value_bytes` gives the
    original's size, and `dlq.original_*` where to read it while its topic keeps it."""
    key, value, original = record.key, record.value, record.headers or ()
    headers = [*original, *letter]
    limit = max(max_bytes, _message_bytes(key, value, original))
    if _message_bytes(key, value, headers) <= limit:
        return key, value, headers
    headers += [(ORIGINAL_VALUE_BYTES, str(len(value or b"")).encode()), (TRUNCATED, b"value")]
    room = limit - _message_bytes(key, b"", headers)
    if room < 0:
        return _bare_dead_letter(record, letter)
    cut = (value or b"")[:room]
    # The cut value's length, written as a varint, takes a few bytes more than an empty value's.
    return key, cut[: len(cut) - max(_message_bytes(key, cut, headers) - limit, 0)], headers


def _bare_dead_letter(record: ConsumerRecord[bytes, bytes], letter: Headers) -> tuple[None, bytes, Headers]:
    """`record`'s DLQ copy without its value, key and headers: the DLQ's headers and the original's size."""
    return None, b"", [*letter, (ORIGINAL_VALUE_BYTES, str(len(record.value or b"")).encode()), (TRUNCATED, b"all")]


# The reasons' beginnings (decode_event's and this module's) -> the DLQ counter's `reason`.
_DLQ_REASON_KINDS = (
    ("rejected by handler", "rejected"),
    ("handler failed", "handler_failed"),
    ("unknown event type", "unknown_type"),
    ("invalid ", "invalid_data"),
)


def dlq_reason_kind(reason: str) -> str:
    """The bounded `reason` label (cxkit.metrics.DLQ_REASONS) of a DLQ reason's free text;
    `malformed` for a message that is no event at all (not JSON, not a CloudEvent, empty)."""
    for prefix, kind in _DLQ_REASON_KINDS:
        if reason.startswith(prefix):
            return kind
    return "malformed"


def _traceparent_of(delivery: Delivery) -> str | None:
    """The trace a delivery continues: the context its producer put in the message headers
    (the relay's send), else the one the event carries (the change that caused it)."""
    if delivery.record is not None:
        for name, value in delivery.record.headers or ():
            if name == "traceparent" and value:
                return value.decode("latin-1")
    return delivery.event.traceparent


def _runs_by_type(deliveries: list[Delivery]) -> list[list[Delivery]]:
    """Consecutive events of the same type, so handlers may batch without reordering."""
    runs: list[list[Delivery]] = []
    for d in deliveries:
        if runs and runs[-1][0].event.type == d.event.type:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs
