"""A service's dead letters: what its consumers sent to `<topic>.dlq` (see
`cxkit.kafka.consumer`), read back with their reasons, and sent again to their topic once the
cause is fixed (a handler bug, an event type or field this version did not know).

A dead letter is read from the DLQ topics of the topics the service's consumers read, and is
the service's when its `dlq.consumer` header names one of them. It counts as *applied* once
that consumer's processed-events table holds its event id: sent again, or the same event
delivered anew, and applied. Sending again is safe: every consumer of the topic skips an event
id it applied already (the other services' consumers included), so only the consumer that
failed applies it. A message that is no event at all (`malformed`: not JSON, not a CloudEvent)
has no id to skip by, and is never sent again; nor is the letter of an event older than the
consumers' memory of applied events (PROCESSED_EVENTS_RETENTION_DAYS less a day: `too_old`).
An event's age is the older of its message's time (`dlq.original_timestamp`) and its own
`time`, not the letter's: a new consumer group reading its topic from the start dead-letters
today events the topic's other consumers applied, and forgot, long ago."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.db import utcnow
from cxkit.events.registry import dlq_topic
from cxkit.kafka.client import make_producer
from cxkit.kafka.consumer import ORIGINAL_TIMESTAMP, dlq_reason_kind
from cxkit.replay import at_end, from_the_start
from cxkit.settings import ServiceSettings

# The header a sent-again message carries: the dead letter it came from (`<dlq topic>/<partition>/<offset>`).
REDRIVEN_FROM = "dlq.redriven_from"
NOT_REDRIVEN = "malformed"  # the reason kind that is never sent again (no event id)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of a `<topic>.dlq`: where it lies, why it is there, and the message as it
    first came (`key`, `value`, and its `headers` without the DLQ's own)."""

    dlq_topic: str
    partition: int
    offset: int
    at: dt.datetime  # when it was dead-lettered
    consumer: str
    reason: str
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    event_id: str | None
    event_type: str | None
    original_at: dt.datetime | None = None  # when the original was published (`dlq.original_timestamp`)
    event_time: dt.datetime | None = None  # the event's own `time`, when it has one
    applied: bool = False  # the consumer has applied its event since
    # Its event is older than the consumers remember the events they applied
    # (PROCESSED_EVENTS_RETENTION_DAYS less a day; see `born`): whether it was applied since is
    # unknown, and sending it again could make the other consumers of its topic apply it a
    # second time.
    too_old: bool = False

    @property
    def reason_kind(self) -> str:
        return dlq_reason_kind(self.reason)

    @property
    def born(self) -> dt.datetime:
        """How old its event is taken to be: the oldest of the original message's time, the
        event's `time` and the letter's own (the only one a letter from before
        `dlq.original_timestamp` may have). The topic's other consumers may have applied the
        event as soon as it was published, however late this consumer dead-lettered it."""
        return min(t for t in (self.at, self.original_at, self.event_time) if t is not None)

    @property
    def place(self) -> str:
        return f"{self.dlq_topic}/{self.partition}/{self.offset}"

    @property
    def redrivable(self) -> bool:
        """Not applied yet, an event (an id to skip by) that may apply when sent again, and from
        the topic its DLQ is named after (it goes back there)."""
        return (
            not self.applied
            and not self.too_old
            and self.event_id is not None
            and self.reason_kind != NOT_REDRIVEN
            and dlq_topic(self.original_topic) == self.dlq_topic
        )

    def summary(self) -> dict[str, Any]:
        """As `dlq list --json` prints it (no message bytes)."""
        return {
            "dlq": self.place,
            "at": self.at.isoformat(),
            "consumer": self.consumer,
            "reason_kind": self.reason_kind,
            "reason": self.reason,
            "original": f"{self.original_topic}/{self.original_partition}/{self.original_offset}",
            "event_id": self.event_id,
            "event_type": self.event_type,
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "applied": self.applied,
            "too_old": self.too_old,
        }


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _time_of_ms(value: bytes | None) -> dt.datetime | None:
    """A Kafka timestamp (ms since the epoch, as text); None if it is none."""
    ms = _int(value)
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if ms is not None and ms >= 0 else None
    except (OverflowError, OSError, ValueError):
        return None


def _time_of_text(value: object) -> dt.datetime | None:
    """A CloudEvent `time` (RFC 3339 text), UTC if it names no offset; None if it is none."""
    if not isinstance(value, str):
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def _event_of(value: bytes | None) -> tuple[str | None, str | None, dt.datetime | None]:
    """The event's id, type and time, when the message is a JSON object holding them (as text)."""
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    event_id, event_type = doc.get("id"), doc.get("type")
    return (
        (event_id if isinstance(event_id, str) and event_id else None),
        (event_type if isinstance(event_type, str) else None),
        _time_of_text(doc.get("time")),
    )


def dead_letter(record: ConsumerRecord[bytes, bytes]) -> DeadLetter | None:
    """The dead letter a DLQ message is, or None for a message without the DLQ's headers."""
    dlq: dict[str, bytes] = {}
    kept: list[tuple[str, bytes]] = []
    for name, value in record.headers or ():
        if name.startswith("dlq."):
            dlq[name] = value
        else:
            kept.append((name, value))
    if "dlq.consumer" not in dlq:
        return None
    event_id, event_type, event_time = _event_of(record.value)
    return DeadLetter(
        dlq_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        at=dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC),
        consumer=dlq["dlq.consumer"].decode("utf-8", "replace"),
        reason=dlq.get("dlq.reason", b"").decode("utf-8", "replace"),
        original_topic=dlq.get("dlq.original_topic", record.topic.removesuffix(".dlq").encode()).decode("utf-8", "replace"),
        original_partition=_int(dlq.get("dlq.original_partition")),
        original_offset=_int(dlq.get("dlq.original_offset")),
        key=record.key,
        value=record.value,
        headers=tuple(kept),
        event_id=event_id,
        event_type=event_type,
        original_at=_time_of_ms(dlq.get(ORIGINAL_TIMESTAMP)),
        event_time=event_time,
    )


async def read_dead_letters(
    settings: ServiceSettings,
    sessions: async_sessionmaker[AsyncSession],
    processed_model: type[Any],
    consumers: Mapping[str, Collection[str]],
) -> AsyncIterator[DeadLetter]:
    """The dead letters of these consumers (name -> the topics it reads), oldest first per
    partition, from the beginning of their DLQ topics to their end, each marked `applied` when
    its consumer has applied its event since. Reads without a consumer group (nothing committed)."""
    topics = sorted({dlq_topic(t) for ts in consumers.values() for t in ts})
    remembered_since = utcnow() - dt.timedelta(days=settings.processed_events_retention_days - 1)
    async with from_the_start(settings, topics, f"{settings.service_name}-dlq") as (reader, partitions):
        if not partitions:
            return
        while True:
            batches = await reader.getmany(*partitions, timeout_ms=500, max_records=settings.consumer_max_records)
            letters = [
                letter
                for records in batches.values()
                for record in records
                if (letter := dead_letter(record)) is not None and letter.consumer in consumers
            ]
            if letters:
                applied = await _applied(sessions, processed_model, letters)
                for letter in letters:
                    yield dataclasses.replace(
                        letter,
                        applied=(letter.consumer, letter.event_id) in applied,
                        too_old=letter.born < remembered_since,
                    )
            elif not batches and await at_end(reader, partitions):
                return


async def _applied(
    sessions: async_sessionmaker[AsyncSession], processed_model: type[Any], letters: list[DeadLetter]
) -> set[tuple[str, str]]:
    """(consumer, event id) of these letters that their consumer has applied: one query."""
    pairs = {(letter.consumer, letter.event_id) for letter in letters if letter.event_id is not None}
    if not pairs:
        return set()
    async with sessions() as session:
        rows = await session.execute(
            select(processed_model.consumer, processed_model.event_id).where(
                processed_model.consumer.in_({c for c, _ in pairs}), processed_model.event_id.in_({e for _, e in pairs})
            )
        )
    return {(consumer, event_id) for consumer, event_id in rows} & pairs  # type: ignore[operator]


def _order(letter: DeadLetter) -> tuple[dt.datetime, str, int, int]:
    return (letter.at, letter.dlq_topic, letter.partition, letter.offset)


@dataclass
class Listing:
    """What `dlq list` shows of dead letters read one at a time: how many per consumer and
    reason kind (and how many of those were applied since), and the `limit` latest, kept
    without their message bytes. Its size does not grow with the DLQ's."""

    limit: int
    total: int = 0
    counts: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)
    applied: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)
    _latest: list[tuple[tuple[dt.datetime, str, int, int], DeadLetter]] = dataclasses.field(default_factory=list)

    def add(self, letter: DeadLetter) -> None:
        self.total += 1
        self.counts[(letter.consumer, letter.reason_kind)] += 1
        self.applied[(letter.consumer, letter.reason_kind)] += letter.applied
        if self.limit:
            entry = (_order(letter), dataclasses.replace(letter, value=None, headers=()))
            if len(self._latest) < self.limit:
                heapq.heappush(self._latest, entry)
            elif entry[0] > self._latest[0][0]:
                heapq.heapreplace(self._latest, entry)

    def latest(self) -> list[DeadLetter]:
        """The `limit` latest, oldest first."""
        return [letter for _, letter in sorted(self._latest, key=lambda entry: entry[0])]


SEND_AHEAD = 1000  # messages handed to the producer before waiting for their acknowledgements


async def redrive(settings: ServiceSettings, letters: Iterable[DeadLetter] | AsyncIterable[DeadLetter]) -> int:
    """Send these dead letters again to their topic, each with its key, value and first headers
    (plus `dlq.redriven_from`), in order, with one producer and at most SEND_AHEAD awaiting
    their acknowledgement (an async iterable is sent as it is read); returns how many the
    broker acknowledged. Only letters that are `redrivable` may be given."""
    if isinstance(letters, Iterable) and not all(letter.redrivable for letter in letters):
        raise ValueError("only dead letters that are events, not applied yet and not too old can be sent again")
    producer = make_producer(settings)
    sent = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        await producer.start()
        async for letter in _each(letters):
            if not letter.redrivable:
                raise ValueError("only dead letters that are events, not applied yet and not too old can be sent again")
            headers = [*letter.headers, (REDRIVEN_FROM, letter.place.encode())]
            pending.append(await producer.send(letter.original_topic, value=letter.value, key=letter.key, headers=headers))
            if len(pending) >= SEND_AHEAD:
                sent += await _acknowledged(pending)
        sent += await _acknowledged(pending)
    finally:
        await producer.stop()
    return sent


async def _acknowledged(pending: list[asyncio.Future[Any]]) -> int:
    for future in pending:
        await future
    done, pending[:] = len(pending), []
    return done


async def _each(letters: Iterable[DeadLetter] | AsyncIterable[DeadLetter]) -> AsyncIterator[DeadLetter]:
    if isinstance(letters, AsyncIterable):
        async for letter in letters:
            yield letter
    else:
        for letter in letters:
            yield letter
