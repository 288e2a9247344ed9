"""Transactional outbox: `add_event` writes the event beside the change; `OutboxRelay`
sends unsent rows in order and marks only what the broker acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Protocol

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from cxkit import tracing
from cxkit.db import session_connection, utcnow
from cxkit.events import encode_event, new_event, topic_for
from cxkit.kafka.client import ensure_topics, failure_kind, make_producer, partition_for
from cxkit.memory import release_freed_memory
from cxkit.metrics import OUTBOX_BACKLOG, OUTBOX_FAILED_ROW_ATTEMPTS, OUTBOX_OLDEST_AGE, OUTBOX_RELAY_ERRORS, OUTBOX_SENT
from cxkit.pg_pool import UnnestInsert
from cxkit.settings import ServiceSettings

log = logging.getLogger(__name__)

# A row whose sending has failed this many times is reported (once, as an error): it is likely to
# fail for good (larger than its topic's `max.message.bytes`, a topic that refuses it), and every
# round stops at it, so the rows after it wait (README: "An outbox row that fails for good").
STUCK_AFTER_ATTEMPTS = 10
# A round whose first row has failed this many times sends that row alone. In a batch, a message
# the broker refuses fails its whole partition's batch, and the round is counted against the
# batch's first row, maybe a good one; alone, a good row goes, and a bad one is counted as itself.
# Nor are the rows behind a row that keeps failing sent again every round (not being marked).
ALONE_AFTER_ATTEMPTS = 2

# Set after any commit that wrote an outbox row, so the relay sends at once instead of
# waiting for its next poll (this keeps write-to-visible latency low).
# One event per running loop (tests may run several loops in one process).
_wakeups: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}


def _relay_wakeup() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    wakeup = _wakeups.get(loop)
    if wakeup is None:
        for stale in [lp for lp in _wakeups if lp.is_closed()]:
            del _wakeups[stale]
        wakeup = _wakeups[loop] = asyncio.Event()
    return wakeup


@event.listens_for(Session, "after_commit")
def _wake_relay_after_commit(session: Session) -> None:
    if session.info.pop("outbox_written", False):
        wake_relay()


def outbox_row(
    event_type: str,
    *,
    source: str,
    subject: uuid.UUID | str | None,
    data: BaseModel,
    key: str | None = None,
    event_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The outbox row (column -> value) of a new `event_type` event.

    The message key defaults to the subject (the customer id), so one customer's events stay
    in one partition, in order."""
    ce = new_event(event_type, source=source, subject=str(subject) if subject else None, data=data, event_id=event_id)
    value = encode_event(ce)
    if os.environ.get("CX_VALIDATE_EVENTS") == "1":
        # Switched on by the test suite: every event any test makes must match the published schema.
        from cxkit.events.contract import validation_errors

        errors = validation_errors(orjson.loads(value))
        if errors:
            raise RuntimeError(f"{event_type} breaks its published schema: {errors}")
    headers = {"content-type": "application/cloudevents+json", "ce_type": event_type}
    if ce.traceparent:
        headers["traceparent"] = ce.traceparent
    return {
        "event_id": uuid.UUID(ce.id),
        "topic": topic_for(event_type),
        "key": key if key is not None else ce.subject,
        "event_type": event_type,
        "value": value,
        "headers": headers,
        "created_at": utcnow(),
    }


def add_event(
    session: AsyncSession,
    outbox_model: type[Any],
    event_type: str,
    *,
    source: str,
    subject: uuid.UUID | str | None,
    data: BaseModel,
    key: str | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Add an outbox row for `event_type` in the session's transaction; returns the event id.
    Inside `outbox_batch`, the row waits to be written with the batch's others."""
    row = outbox_row(event_type, source=source, subject=subject, data=data, key=key, event_id=event_id)
    info = session.sync_session.info
    batch = info.get(_BATCH)
    if batch is not None and batch[0] is outbox_model:
        batch[1].append(row)
    else:
        session.add(outbox_model(**row))
    info["outbox_written"] = True
    return row["event_id"]


_BATCH = "outbox_batch"
_OUTBOX_COLUMNS = ("event_id", "topic", "key", "event_type", "value", "headers", "created_at")
_batch_inserts: dict[str, UnnestInsert] = {}


@contextlib.asynccontextmanager
async def outbox_batch(session: AsyncSession, outbox_model: type[Any]) -> AsyncIterator[None]:
    """The events `add_event` adds inside the block are written together when it ends: one
    prepared `INSERT ... SELECT FROM unnest(...)` instead of an ORM object each (a consumer
    poll announcing a thousand invitations or suppressions flushed a thousand objects). Rows
    the session holds already are flushed first, so outbox ids keep the order of the calls."""
    info = session.sync_session.info
    if info.get(_BATCH) is not None:  # nested: the outer block writes them
        yield
        return
    rows: list[dict[str, Any]] = []
    info[_BATCH] = (outbox_model, rows)
    try:
        yield
    finally:
        del info[_BATCH]
    if rows:
        table = outbox_model.__table__
        insert = _batch_inserts.get(table.name)
        if insert is None:
            insert = _batch_inserts[table.name] = UnnestInsert(table, _OUTBOX_COLUMNS)
        await session.flush()
        for row in rows:
            row["headers"] = orjson.dumps(row["headers"]).decode()  # JSON travels as text
        await insert.execute(await session_connection(session), insert.column_lists(rows))


def wake_relay() -> None:
    """Have the relay send at once (after a commit that wrote outbox rows)."""
    with contextlib.suppress(RuntimeError):
        _relay_wakeup().set()


class SentRows(Protocol):
    """Told, inside the relay's transaction, which rows the broker acknowledged (webhook
    fan-out), and after the commit that they are committed."""

    async def add(self, conn: Any, rows: list[Any]) -> int: ...

    def committed(self) -> None: ...


@contextlib.asynccontextmanager
async def _own_transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection (a session's), for a transaction the caller begins and ends
    with its own statements (so BEGIN and COMMIT can share a round trip with the statements
    beside them). SQLAlchemy has begun nothing on it; should the caller leave a transaction
    open (it failed midway), it is rolled back here, and a connection that cannot even do that
    is invalidated rather than given back to the pool."""
    async with sessions() as session:
        connection = await session.connection()
        conn: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
        try:
            yield conn
        finally:
            if not conn.is_closed() and conn.is_in_transaction():
                try:
                    await conn.execute("ROLLBACK")
                except BaseException:
                    await connection.invalidate()
                    raise


# The planner's settings for a relay round. An outbox is empty most of the time, so its
# statistics mostly say "empty"; a burst (an import announcing 200,000 customers) then met a
# planner sure that sorting the unsent rows costs nothing. The claim of the first unsent ids
# ran as a scan of the whole outbox and an on-disk sort (370 ms a round: 1,200 events/s, and a
# core of PostgreSQL busy) instead of a walk of the first ids of the partial index on unsent
# rows (2 ms), until the next ANALYZE; a plan cached on the connection while the table was
# empty kept that shape too. With sorting ruled out the partial index is the only way to the
# lowest unsent ids, whatever the statistics say.
ROUND_SETTINGS = "SET LOCAL enable_sort = off"


async def _acknowledged(
    rows: list[Any], futures: list[asyncio.Future[Any] | None], failure: BaseException | None
) -> tuple[list[int], BaseException | None]:
    """The ids of the rows the broker acknowledged, in order up to the first that it did not
    (its future failed, or it has none: the round stopped before sending it), and the first
    failure; `futures[i]` is row i's acknowledgement (its batch's, when sent in batches)."""
    acked: list[int] = []
    for row, future in zip(rows, futures, strict=False):
        if future is None:
            break
        try:
            await future
        except Exception as exc:
            failure = failure or exc
            break
        acked.append(row["id"])
    for topic, sent in Counter(row["topic"] for row in rows[: len(acked)]).items():
        OUTBOX_SENT.labels(topic).inc(sent)
    return acked, failure


class OutboxRelay:
    """Sends outbox rows to Kafka. Safe to run in several processes: their rounds take turns
    (a transaction-scoped advisory lock), so no two relays send the same row, and one key's
    events reach their partition in outbox order. Were rounds to overlap, a relay could send a
    customer's newer event while another still held an older one it had claimed (SKIP LOCKED
    passes it by), and the older would land after the newer.

    It keeps `outbox_backlog` and `outbox_oldest_unsent_age_seconds` current without a query of
    their own per round: a round that empties the outbox sets both to 0, and they are counted
    (one indexed statement) at most every `backlog_interval_s` while rows wait or rounds fail.
    `outbox_failed_row_attempts` is the `attempts` of the row the last round stopped at (0 after
    a round that stopped at none), and a row reaching STUCK_AFTER_ATTEMPTS is logged as an error,
    once: rounds always begin with the lowest unsent ids, so a row that fails for good stops every
    one of them, and the rows after it wait. From ALONE_AFTER_ATTEMPTS on, a round's first row
    goes alone, so that the count is the failing row's own and nothing behind it goes again."""

    backlog_interval_s = 5.0

    def __init__(
        self,
        settings: ServiceSettings,
        session_factory: async_sessionmaker[AsyncSession],
        outbox_model: type[Any],
        topics: list[str],
        on_sent: SentRows | None = None,
    ) -> None:
        self.settings = settings
        self.on_sent = on_sent
        self.session_factory = session_factory
        self.model = outbox_model
        self._table = outbox_model.__tablename__
        self._select_unsent = (
            f"SELECT id, event_id, event_type, topic, key, value, headers, attempts FROM {self._table} WHERE sent_at IS NULL "
            "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        )
        self.topics = topics
        self._producer: AIOKafkaProducer | None = None
        self._stopping = False
        self.connected = False
        self._backlog = OUTBOX_BACKLOG.labels(settings.service_name)
        self._oldest_age = OUTBOX_OLDEST_AGE.labels(settings.service_name)
        self._failed_row_attempts = OUTBOX_FAILED_ROW_ATTEMPTS.labels(settings.service_name)
        self._backlog_measured = -float("inf")  # time.monotonic() of the last count
        self._sent_alone = False  # the last round sent a row that had failed before alone

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            await ensure_topics(self.settings, self.topics)
            producer = make_producer(self.settings)
            try:
                await producer.start()
            except Exception:
                await producer.stop()
                raise
            self._producer = producer
            self.connected = True
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.connected = False
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def relay_once(self) -> int:
        """Send one batch; returns the number of rows the broker acknowledged.

        A round is three round trips to PostgreSQL, whatever its size: BEGIN with the relays'
        lock, the rows, and their `sent_at` with COMMIT (plus one insert when webhooks take some
        of them). It runs on the web process's event loop, where every round trip waits its
        turn behind the requests being served, so each one saved shortens write-to-visible."""
        producer = await self._ensure_producer()
        # Plain statements, not ORM objects: the relay runs once per burst of writes, in the web
        # process, so work here taxes every write.
        async with _own_transaction(self.session_factory) as conn:
            # Waits while another relay's round is sending; released when this round ends.
            # The key is `cxkit.db.lock_keys(session, "outbox-relay", [table])`'s.
            await conn.execute(
                f"BEGIN; {ROUND_SETTINGS}; SELECT pg_advisory_xact_lock(hashtextextended('outbox-relay:{self._table}', 0))"
            )
            rows = await conn.fetch(self._select_unsent, self.settings.outbox_batch_size)
            if not rows:
                await conn.execute("COMMIT")
                self._set_backlog(0, None)
                self._failed_row_attempts.set(0)
                return 0
            claimed = len(rows)
            self._sent_alone = rows[0]["attempts"] >= ALONE_AFTER_ATTEMPTS and claimed > 1
            if self._sent_alone:
                rows = rows[:1]
            acked, failure = await self._send(producer, rows)
            finish: list[str] = []
            if acked:
                if self.on_sent is not None:
                    await self.on_sent.add(conn, rows[: len(acked)])
                # The ids are the table's own bigints, written into the text so that the update
                # and the commit go in one round trip.
                finish.append(
                    f"UPDATE {self._table} SET sent_at = clock_timestamp() "
                    f"WHERE id = ANY('{{{','.join(str(i) for i in acked)}}}'::bigint[])"
                )
            attempts = 0
            if failure is not None:
                attempts = await conn.fetchval(
                    f"UPDATE {self._table} SET attempts = attempts + 1, last_error = $2 WHERE id = $1 RETURNING attempts",
                    rows[len(acked)]["id"],
                    str(failure)[:2000],
                )
            finish.append("COMMIT")
            await conn.execute("; ".join(finish))
        if self.on_sent is not None:
            self.on_sent.committed()
        self._failed_row_attempts.set(attempts)
        if failure is not None:
            if attempts == STUCK_AFTER_ATTEMPTS:  # once per row: its count passes this number once
                self._report_stuck(rows[len(acked)], attempts, failure)
            raise failure
        if claimed < self.settings.outbox_batch_size and not self._sent_alone:
            self._set_backlog(0, None)  # all it found is sent (rows committed since wait for the next round)
        else:
            await self.measure_backlog()
        return len(acked)

    def _report_stuck(self, row: Any, attempts: int, failure: BaseException) -> None:
        log.error(
            "outbox row failed %d times and every relay round stops at it: the rows after it wait. Fix the cause "
            "(e.g. the topic's max.message.bytes) or set the row aside (README: An outbox row that fails for good)",
            attempts,
            extra={
                "outbox_table": self._table,
                "outbox_id": row["id"],
                "event_id": str(row["event_id"]),
                "event_type": row["event_type"],
                "topic": row["topic"],
                "attempts": attempts,
                "error": str(failure)[:2000] or repr(failure),
            },
        )

    async def _send(self, producer: AIOKafkaProducer, rows: list[Any]) -> tuple[list[int], BaseException | None]:
        """Send the rows in order; the ids the broker acknowledged (a prefix of the rows) and
        the first failure, if any. Traced, each row is sent on its own, within its request's
        trace (aiokafka's instrumentation makes a span per `send`); else in batches."""
        if tracing.recording():
            return await self._send_each(producer, rows)
        return await self._send_batched(producer, rows)

    async def _send_batched(self, producer: AIOKafkaProducer, rows: list[Any]) -> tuple[list[int], BaseException | None]:
        """The rows as one batch per partition (a new one when it is full), each key's in
        order: 3 µs of CPU per event against 12 for a `send` each, which makes a future per
        message. The partition is the one `send` would choose; a batch fails as a whole, as a
        partition's batch does at the broker."""
        failure: BaseException | None = None
        batch_of: list[Any] = []  # the batch each row went into, in row order
        delivered: dict[int, asyncio.Future[Any]] = {}  # id(batch) -> its acknowledgement
        filling: dict[tuple[str, int], Any] = {}
        partitions: dict[str, tuple[list[int], list[int]]] = {}

        async def submit(tp: tuple[str, int], batch: Any) -> None:
            batch.close()
            delivered[id(batch)] = await producer.send_batch(batch, tp[0], partition=tp[1])

        try:
            for row in rows:
                topic = row["topic"]
                if topic not in partitions:
                    known = sorted(await producer.partitions_for(topic))
                    available = producer.client.cluster.available_partitions_for_topic(topic) or ()
                    partitions[topic] = (known, sorted(available))
                key = row["key"].encode() if row["key"] else None
                tp = (topic, partition_for(key, *partitions[topic]))
                headers = [(k, str(v).encode()) for k, v in (row["headers"] or {}).items()]
                batch = filling.get(tp)
                if batch is None or batch.append(key=key, value=row["value"], timestamp=None, headers=headers) is None:
                    if batch is not None:  # full: it goes, and a new one takes the row
                        await submit(tp, batch)
                    batch = filling[tp] = producer.create_batch()
                    batch.append(key=key, value=row["value"], timestamp=None, headers=headers)  # a first always fits
                batch_of.append(batch)
            for tp, batch in filling.items():
                await submit(tp, batch)
        except Exception as exc:
            failure = exc
        return await _acknowledged(rows, [delivered.get(id(batch)) for batch in batch_of], failure)

    async def _send_each(self, producer: AIOKafkaProducer, rows: list[Any]) -> tuple[list[int], BaseException | None]:
        futures: list[asyncio.Future[Any] | None] = []
        failure: BaseException | None = None
        for row in rows:
            headers = row["headers"] or {}
            # Sent within its request's trace, and aiokafka's instrumentation puts the send's
            # own context in the headers instead of the stored one.
            try:
                with tracing.attached(headers.get("traceparent")):
                    sending = producer.send(
                        row["topic"],
                        value=row["value"],
                        key=row["key"].encode() if row["key"] else None,
                        headers=[(k, str(v).encode()) for k, v in headers.items() if k != "traceparent"],
                    )
                    futures.append(await sending)
            except Exception as exc:
                failure = exc
                break
        return await _acknowledged(rows, futures, failure)

    async def backlog(self) -> tuple[int, dt.datetime | None]:
        """The unsent rows: how many, and when the oldest was written (None for none)."""
        table = self.model.__tablename__
        async with self.session_factory() as session:
            conn = await session_connection(session)
            # Both from the partial index on unsent ids; the oldest is the lowest id.
            row = await conn.fetchrow(
                f"SELECT (SELECT count(*) FROM {table} WHERE sent_at IS NULL) AS n, "
                f"(SELECT created_at FROM {table} WHERE sent_at IS NULL ORDER BY id LIMIT 1) AS oldest"
            )
        assert row is not None
        return int(row["n"]), row["oldest"]

    async def measure_backlog(self, *, force: bool = False) -> None:
        """Count the backlog into the gauges, unless it was counted less than
        `backlog_interval_s` ago."""
        if not force and time.monotonic() - self._backlog_measured < self.backlog_interval_s:
            return
        self._set_backlog(*await self.backlog())

    def _set_backlog(self, count: int, oldest: dt.datetime | None) -> None:
        self._backlog_measured = time.monotonic()
        self._backlog.set(count)
        self._oldest_age.set(max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0)

    async def run(self) -> None:
        """Relay until cancelled; a broker outage only delays events, it never loses them."""
        wakeup = _relay_wakeup()
        backoff = 0.2
        poll = self.settings.outbox_poll_interval_ms / 1000
        while not self._stopping:
            try:
                wakeup.clear()
                sent = await self.relay_once()
                backoff = 0.2
                if sent:
                    release_freed_memory()  # what the sent rounds freed (at most once a second)
                if sent >= self.settings.outbox_batch_size or self._sent_alone:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                OUTBOX_RELAY_ERRORS.labels(self.settings.service_name, failure_kind(exc)).inc()
                log.warning("outbox relay round failed, retrying", extra={"error": repr(exc), "retry_in_s": backoff})
                await self._drop_producer()
                with contextlib.suppress(Exception):  # the database may be what failed
                    await self.measure_backlog()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def stop(self) -> None:
        self._stopping = True
        await self._drop_producer()
