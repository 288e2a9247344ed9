"""A service's dead letters read back (cxkit.dlq) and sent again once the cause is fixed, against
the dev broker and PostgreSQL, with a real EventConsumer putting them there."""

from __future__ import annotations

import datetime as dt
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit.dlq import REDRIVEN_FROM, DeadLetter, Listing, read_dead_letters, redrive
from cxkit.events.registry import dlq_topic
from cxkit.kafka.consumer import Delivery, EventConsumer, PermanentEventError
from cxkit.settings import ServiceSettings
from cxkit.testing import wait_for

from .conftest import ProcessedEvent, applied, applying, consuming, customer_event, publish, read_topic

Sessions = async_sessionmaker[AsyncSession]


class Flaky:
    """Applies `customer.updated`, but a customer named `broken` fails (a bug) until `fixed`,
    and one named `reject` is refused for good."""

    def __init__(self, applier: str) -> None:
        self.record = applying(applier)
        self.fixed = False

    async def __call__(self, session: AsyncSession, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            if d.payload.name == "broken" and not self.fixed:
                raise ValueError("handler bug")
            if d.payload.name == "reject":
                raise PermanentEventError("refuses this customer")
        await self.record(session, deliveries)


@pytest.fixture
async def consumer(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine, topic: str
) -> AsyncIterator[tuple[EventConsumer, Flaky, str]]:
    name = f"kit-dlq-{uuid.uuid4().hex[:8]}"
    handler = Flaky(name)
    async with consuming(kit_settings, kit_engine, name, topic, handler) as running:
        yield running, handler, topic


async def letters(settings: ServiceSettings, sessions: Sessions, consumers: dict[str, list[str]]) -> list[DeadLetter]:
    return [letter async for letter in read_dead_letters(settings, sessions, ProcessedEvent, consumers)]


async def test_dead_letters_are_read_with_their_reason_and_sent_again_once_the_cause_is_fixed(
    kit_settings: ServiceSettings, sessions: Sessions, consumer: tuple[EventConsumer, Flaky, str]
) -> None:
    running, handler, topic = consumer
    bootstrap = kit_settings.kafka_bootstrap_servers
    ada, bob, cy = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    broken, rejected = customer_event(bob, 1, "broken"), customer_event(cy, 1, "reject")
    unknown = b'{"specversion":"1.0","id":"evt-unknown-1","source":"urn:x","type":"customer.teleported","data":{}}'
    messages = [
        (str(ada).encode(), customer_event(ada, 1, "Ada")),
        (str(bob).encode(), broken),
        (b"cy", rejected),
        (b"junk", b"not json at all"),
        (b"u", unknown),
    ]
    await publish(bootstrap, topic, messages, origin=b"pos-17")
    # Another service's dead letter on the same DLQ topic: not this consumer's.
    await publish(bootstrap, dlq_topic(topic), [(b"x", customer_event(uuid.uuid4(), 1, "Theirs"))], **{"dlq.consumer": b"other"})

    async def dead_lettered() -> bool:
        return len(await read_topic(bootstrap, dlq_topic(topic), at_least=5)) >= 5

    await wait_for(dead_lettered, timeout=30, interval=0.2)

    found = await letters(kit_settings, sessions, {running.name: [topic]})
    by_kind = {letter.reason_kind: letter for letter in found}
    assert sorted(by_kind) == ["handler_failed", "malformed", "rejected", "unknown_type"], [f.summary() for f in found]
    failed = by_kind["handler_failed"]
    assert (failed.key, failed.value, failed.original_topic, failed.consumer) == (str(bob).encode(), broken, topic, running.name)
    assert ("origin", b"pos-17") in failed.headers and all(not name.startswith("dlq.") for name, _ in failed.headers)
    assert "handler bug" in failed.reason and failed.event_type == "customer.updated" and not failed.applied
    assert failed.redrivable and by_kind["unknown_type"].redrivable
    assert by_kind["malformed"].event_id is None and not by_kind["malformed"].redrivable
    with pytest.raises(ValueError, match="only dead letters"):
        await redrive(kit_settings, [by_kind["malformed"]])

    handler.fixed = True  # the bug fixed, the failed event sent again: applied once, by this consumer
    assert await redrive(kit_settings, [failed]) == 1

    async def bob_applied() -> bool:
        return [e.name for e in await applied(sessions, running.name)] == ["Ada", "broken"]

    await wait_for(bob_applied, timeout=30, interval=0.2)
    again = [r for r in await read_topic(bootstrap, topic, at_least=6) if r.value == broken]
    assert len(again) == 2 and (REDRIVEN_FROM, failed.place.encode()) in again[1].headers
    assert ("origin", b"pos-17") in again[1].headers and again[1].key == str(bob).encode()

    now = {letter.reason_kind: letter for letter in await letters(kit_settings, sessions, {running.name: [topic]})}
    assert now["handler_failed"].applied and not now["handler_failed"].redrivable  # sent again, it applied
    assert not now["rejected"].applied and now["rejected"].redrivable  # still refused: a second run may send it
    assert await letters(kit_settings, sessions, {"nobody": [topic]}) == []


async def test_a_dead_letter_older_than_the_consumers_memory_is_never_sent_again(
    kit_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    """Its event's id may be forgotten by the other consumers of its topic by now
    (PROCESSED_EVENTS_RETENTION_DAYS): sent again, they could apply it a second time."""
    from aiokafka import AIOKafkaProducer

    settings = kit_settings.model_copy(update={"processed_events_retention_days": 10})
    consumer = f"kit-dlq-old-{uuid.uuid4().hex[:8]}"
    headers = [
        ("dlq.reason", b"handler failed after 3 attempts: ValueError('handler bug')"),
        ("dlq.original_topic", topic.encode()),
        ("dlq.original_partition", b"0"),
        ("dlq.original_offset", b"7"),
        ("dlq.consumer", consumer.encode()),
    ]
    now_ms = int(time.time() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        for days in (9.5, 8.5):  # older than the retention less a day; younger
            value = customer_event(uuid.uuid4(), 1, f"{days} days ago")
            await producer.send_and_wait(
                dlq_topic(topic), value=value, key=b"k", headers=headers, timestamp_ms=now_ms - int(days * 86_400_000)
            )
    finally:
        await producer.stop()

    old, young = sorted(await letters(settings, sessions, {consumer: [topic]}), key=lambda letter: letter.at)
    assert (old.too_old, old.redrivable, old.summary()["too_old"]) == (True, False, True)
    assert (young.too_old, young.redrivable) == (False, True)
    with pytest.raises(ValueError, match="not applied yet"):
        await redrive(settings, [old])


async def test_a_dead_letter_of_an_event_older_than_the_consumers_memory_is_never_sent_again_however_recent_the_letter(
    kit_settings: ServiceSettings, sessions: Sessions, consumer: tuple[EventConsumer, Flaky, str]
) -> None:
    """A new consumer group reads its topic from the beginning and dead-letters today an event
    published 60 days ago: the letter is new, but the topic's other consumers forgot that
    event's id long ago (PROCESSED_EVENTS_RETENTION_DAYS), so sent again it would be applied a
    second time by them. The consumer keeps the original message's time in the letter
    (`dlq.original_timestamp`, ms), and the age that counts is the older of it and the event's
    own `time`; the letter's time only when it has neither (a letter from before the header)."""
    from aiokafka import AIOKafkaProducer

    running, _, topic = consumer
    settings = kit_settings.model_copy(update={"processed_events_retention_days": 10})
    now_ms = int(time.time() * 1000)
    day_ms = 86_400_000
    old_event, new_event = customer_event(uuid.uuid4(), 1, "reject"), customer_event(uuid.uuid4(), 1, "reject")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        # Its envelope says now (an event's `time` may be missing or wrong): only the message's time tells.
        await producer.send_and_wait(topic, value=old_event, key=b"old", timestamp_ms=now_ms - 60 * day_ms)
        await producer.send_and_wait(topic, value=new_event, key=b"new", timestamp_ms=now_ms - day_ms)
        # Letters from before the header, written by hand: their event's `time` is all there is.
        written = [("time 60 days ago", now_ms - 60 * day_ms), ("time 1 day ago", now_ms - day_ms)]
        for name, at_ms in written:
            event_time = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
            value = customer_event(uuid.uuid4(), 1, name, time=event_time)
            headers = [("dlq.reason", b"rejected by handler: no"), ("dlq.consumer", running.name.encode())]
            await producer.send_and_wait(dlq_topic(topic), value=value, key=name.encode(), headers=headers)
        # A header that is no number is no time: the other two decide.
        await producer.send_and_wait(
            dlq_topic(topic),
            value=customer_event(uuid.uuid4(), 1, "garbled"),
            key=b"garbled",
            headers=[
                ("dlq.reason", b"rejected by handler: no"),
                ("dlq.consumer", running.name.encode()),
                ("dlq.original_timestamp", b"soon"),
            ],
        )
    finally:
        await producer.stop()

    async def dead_lettered() -> bool:
        return len(await read_topic(settings.kafka_bootstrap_servers, dlq_topic(topic), at_least=5)) >= 5

    await wait_for(dead_lettered, timeout=30, interval=0.2)
    found = {letter.key: letter for letter in await letters(settings, sessions, {running.name: [topic]})}
    assert sorted(found) == [b"garbled", b"new", b"old", b"time 1 day ago", b"time 60 days ago"]
    old = found[b"old"]
    assert old.at > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # dead-lettered just now...
    assert (old.too_old, old.redrivable, old.summary()["too_old"]) == (True, False, True)  # ...of a message 60 days old
    assert old.original_at == dt.datetime.fromtimestamp((now_ms - 60 * day_ms) / 1000, dt.UTC)
    assert (found[b"new"].too_old, found[b"new"].redrivable) == (False, True)
    assert (found[b"time 60 days ago"].too_old, found[b"time 1 day ago"].too_old) == (True, False)
    assert (found[b"garbled"].original_at, found[b"garbled"].too_old) == (None, False)
    with pytest.raises(ValueError, match="not too old"):
        await redrive(settings, [old])


async def test_a_dlq_of_thousands_is_listed_in_the_memory_of_a_few(
    kit_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    """`dlq list` reads the letters one at a time and keeps counts and the latest few, not
    the messages: 3,000 letters of 16 KB (48 MB) are listed with a fraction of that."""
    consumer = f"kit-dlq-big-{uuid.uuid4().hex[:8]}"
    dlq_headers = {
        "dlq.reason": b"handler failed after 3 attempts: ValueError('handler bug')",
        "dlq.original_topic": topic.encode(),
        "dlq.consumer": consumer.encode(),
    }
    padding = b"x" * 16_000
    event = b'{"specversion":"1.0","id":"evt-%d","source":"urn:x","type":"customer.updated","pad":"%s"}'
    messages = [(b"k%d" % n, event % (n, padding)) for n in range(3000)]
    await publish(kit_settings.kafka_bootstrap_servers, dlq_topic(topic), messages, **dlq_headers)

    listing = Listing(limit=5)
    tracemalloc.start()
    try:
        async for letter in read_dead_letters(kit_settings, sessions, ProcessedEvent, {consumer: [topic]}):
            listing.add(letter)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert listing.total == 3000 and listing.counts == {(consumer, "handler_failed"): 3000}
    assert listing.applied == {(consumer, "handler_failed"): 0}
    latest = listing.latest()
    assert len(latest) == 5 and [letter.at for letter in latest] == sorted(letter.at for letter in latest)
    assert all(letter.value is None and letter.event_id is not None for letter in latest)
    assert peak < 16_000_000, f"peak {peak / 1e6:.1f} MB while listing 48 MB of dead letters"
