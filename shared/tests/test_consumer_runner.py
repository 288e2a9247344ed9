"""The consumer runner on its own (cxkit.kafka.consumer.EventConsumer) against the dev broker:
good events applied once each and in order, bad ones sent to `<topic>.dlq` with their
original bytes, headers and the reason while the loop goes on, and a failing database: no
offset committed past what it holds, the events retried until applied, none lost or doubled."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit.db import make_session_factory
from cxkit.dev_broker import DEV_BROKER_SETTINGS
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import CustomerErased
from cxkit.events.registry import dlq_topic
from cxkit.fields import NUL_REFUSED
from cxkit.kafka.consumer import Delivery, EventConsumer, PermanentEventError
from cxkit.settings import ServiceSettings
from cxkit.testing import wait_for

from .conftest import SOURCE, ProcessedEvent, applied, applying, committed_offsets, customer_event, publish, read_topic, settle

Sessions = async_sessionmaker[AsyncSession]
ECHO = "urn:cxkit:echo"  # a source the consumer skips (its own service's events)


class Handler:
    """Records each `customer.updated` it is given, but misbehaves by the customer's name:
    `reject` is refused for good, `broken` fails every time (a bug), `stuck` fails as when the
    database connection drops, until `stuck` is set False; `busy` gets the server's refusals of
    a transaction for now (a deadlock, then a full lock table, in turn) until `busy` is set False."""

    def __init__(self, applier: str) -> None:
        self.record = applying(applier)
        self.calls: Counter[str] = Counter()
        self.collector_on: dict[str, bool] = {}  # per name: was the garbage collector on when applied
        self.stuck = True
        self.busy = True

    async def __call__(self, session: AsyncSession, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            self.calls[d.payload.name] += 1
            self.collector_on[d.payload.name] = gc.isenabled()
            if d.payload.name == "reject":
                raise PermanentEventError("refuses this customer")
            if d.payload.name == "broken":
                raise ValueError("handler bug")
            if d.payload.name == "stuck" and self.stuck:
                raise ConnectionResetError("connection reset by peer")
            if d.payload.name == "busy" and self.busy:
                sqlstate = ("40P01", "53200")[self.calls["busy"] % 2]  # deadlock_detected, out_of_memory
                await session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '{sqlstate}'; END $$"))
        await self.record(session, deliveries)


class Running:
    """One EventConsumer (one group) for the module, reading a topic per test, as a task: the
    dev broker takes seconds to form a group, so the tests share one."""

    def __init__(self, settings: ServiceSettings, sessions: Sessions, purposes: list[str]) -> None:
        self.name = f"kit-test-{uuid.uuid4().hex[:8]}"
        self.topics = {purpose: f"cxkit-test.{purpose}.{uuid.uuid4().hex[:8]}" for purpose in purposes}
        self.handler = Handler(self.name)
        self.consumer = EventConsumer(
            name=self.name,
            topics=list(self.topics.values()),
            handlers={"customer.updated": self.handler},
            settings=settings,
            session_factory=sessions,
            processed_model=ProcessedEvent,
            skip_sources=frozenset({ECHO}),
        )
        self.bootstrap = settings.kafka_bootstrap_servers
        self.task = asyncio.create_task(self.consumer.run())

    async def committed(self, topic: str) -> int:
        """The group's committed offset on the topic's one used partition (0 for none)."""
        return max((o or 0) for o in (await committed_offsets(self.bootstrap, self.name, topic)).values())

    async def caught_up(self, topic: str, messages: int) -> None:
        """Until the group committed offsets past all `messages` (sent to one partition)."""

        async def done() -> bool:
            return await self.committed(topic) >= messages

        await wait_for(done, timeout=20, interval=0.1)

    async def stop(self) -> None:
        await settle(self.task)
        await self.consumer.stop()


@pytest.fixture(scope="module")
async def running(kit_settings: ServiceSettings, kit_engine: AsyncEngine) -> AsyncIterator[Running]:
    purposes = ["dead-letters", "transient", "busy", "collector", "oversized"]
    consumer = Running(kit_settings, make_session_factory(kit_engine), purposes)
    yield consumer
    await consumer.stop()


def envelope(event_type: str, data: object) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": SOURCE, "type": event_type, "data": data})


async def processed_ids(sessions: Sessions, consumer: str) -> set[str]:
    async with sessions() as session:
        return set((await session.scalars(select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == consumer))).all())


async def test_bad_messages_go_to_the_dlq_with_their_reason_and_the_good_ones_are_applied_once(
    running: Running, sessions: Sessions
) -> None:
    topic = running.topics["dead-letters"]
    ada, bob = uuid.uuid4(), uuid.uuid4()
    first = customer_event(ada, 1, "Ada")
    erased = encode_event(
        new_event(
            "customer.erased",
            source=SOURCE,
            subject=str(ada),
            data=CustomerErased(customer_id=ada, erased_at=dt.datetime.now(dt.UTC)),
        )
    )
    dead = {
        b'{"not json': "not JSON",
        envelope("no.such.type", {}): "unknown event type 'no.such.type'",
        envelope("customer.updated", {"version": 2}): "invalid customer.updated data: id: Field required",
        envelope("customer.updated", {"id": str(bob), "updated_at": "2026-11-23T10:00:00"}): (
            "invalid customer.updated data: updated_at: Input should be an RFC 3339 time with an offset"
        ),
        customer_event(ada, 2, "reject"): "rejected by handler: refuses this customer",
        customer_event(bob, 1, "broken"): "handler failed after 2 attempts: ValueError('handler bug')",
        # What no table can hold is refused as the message is decoded, with the field, and the rest
        # of the poll is applied. Before, the poll's transaction failed on it, each of its events
        # was applied alone, and it went here as "handler failed" with the database's error.
        customer_event(bob, 2, "nul-id", id="bob\x002"): f"invalid customer.updated event: id: text {NUL_REFUSED}",
        customer_event(bob, 3, "a\x00b"): f"invalid customer.updated event: data.name: text {NUL_REFUSED}",
        customer_event(bob, 4, "long-id", id="i" * 256): "not a CloudEvent: id: String should have at most 255 characters",
        envelope("customer.updated", {"id": str(bob), "version": 2**31}): (
            "invalid customer.updated data: version: Input should be less than or equal to 2147483647"
        ),
        # A type that is no text (nor hashable): before, decoding the poll raised, and the consumer
        # fetched the same poll again for ever, its partition stalled and nothing dead-lettered.
        envelope(["customer.updated"], {"id": str(bob)}): "not a CloudEvent: type: Input should be a valid string",
        envelope({"name": "customer.updated"}, {"id": str(bob)}): "not a CloudEvent: type: Input should be a valid string",
    }
    messages = [
        first,
        *list(dead)[:4],
        erased,  # a valid event of a type this consumer does not handle: neither applied nor dead
        *list(dead)[4:],
        first,  # delivered again: applied once
        customer_event(bob, 1, "echo", source=ECHO),  # from a skipped source
        customer_event(ada, 3, "Grace"),
    ]
    await publish(running.bootstrap, topic, [(b"k", m) for m in messages], origin=b"kit-test")
    await running.caught_up(topic, len(messages))

    rows = [r for r in await applied(sessions, running.name) if r.customer_id in (ada, bob)]
    assert [(r.customer_id, r.version, r.name) for r in rows] == [(ada, 1, "Ada"), (ada, 3, "Grace")]
    assert await processed_ids(sessions, running.name) == {r.event_id for r in rows}

    originals = {r.value: r for r in await read_topic(running.bootstrap, topic, at_least=len(messages))}
    dlq = await read_topic(running.bootstrap, dlq_topic(topic), at_least=len(dead))
    assert Counter(r.value for r in dlq) == Counter(list(dead))  # the original bytes, each once
    for record in dlq:
        headers = dict(record.headers)
        assert headers["dlq.reason"].decode().startswith(dead[record.value]), headers["dlq.reason"]
        assert record.key == b"k" and headers["origin"] == b"kit-test"  # the original key and headers, kept
        assert headers["dlq.original_topic"] == topic.encode()
        assert headers["dlq.original_offset"] == str(originals[record.value].offset).encode()
        assert headers["dlq.original_partition"] == str(originals[record.value].partition).encode()
        assert headers["dlq.consumer"] == running.name.encode()


def sized(size: int, event_type: str = "customer.updated") -> bytes:
    """An invalid `event_type` event (its data has no `id`) of exactly `size` bytes."""
    bare = envelope(event_type, {"version": 2, "padding": ""})
    return envelope(event_type, {"version": 2, "padding": "x" * (size - len(bare))})


async def test_an_invalid_message_near_the_size_limit_goes_to_the_dlq_cut_to_fit_and_the_next_is_applied(
    running: Running, sessions: Sessions
) -> None:
    """The broker took the original, but its DLQ copy is the original plus the DLQ's headers: past
    1 MiB (what Apache Kafka takes by default, and aiokafka's producer sends), the copy's value is
    cut to fit and headers say so, with where the whole original lies. Before, the producer refused
    the copy, the poll was never committed, and the consumer fetched it again for ever."""
    topic = running.topics["oversized"]
    customer = uuid.uuid4()
    near_the_limit = sized(1_048_300)
    # An unknown type of a megabyte: the reason, which names the type, is cut too.
    long_type = envelope("t" * 1_048_000, {"id": str(customer)})
    dead = {
        near_the_limit: "invalid customer.updated data: id: Field required",
        long_type: "unknown event type 'tttt",
    }
    messages = [near_the_limit, long_type, customer_event(customer, 1, "Ada")]
    await publish(running.bootstrap, topic, [(b"k", m) for m in messages], origin=b"kit-test")
    await running.caught_up(topic, len(messages))

    rows = [r for r in await applied(sessions, running.name) if r.customer_id == customer]
    assert [(r.version, r.name) for r in rows] == [(1, "Ada")]  # consumption went on
    originals = {r.value: r for r in await read_topic(running.bootstrap, topic, at_least=len(messages))}
    dlq = await read_topic(running.bootstrap, dlq_topic(topic), at_least=len(dead))
    assert len(dlq) == len(dead)
    for record, original in zip(dlq, dead, strict=True):
        headers = dict(record.headers)
        assert headers["dlq.reason"].decode().startswith(dead[original]), headers["dlq.reason"][:100]
        assert len(headers["dlq.reason"].decode()) <= 1000
        assert headers["dlq.truncated"] == b"value"
        assert headers["dlq.original_value_bytes"] == str(len(original)).encode()
        assert record.value is not None and original.startswith(record.value) and len(record.value) < len(original)
        assert record.key == b"k" and headers["origin"] == b"kit-test"
        assert headers["dlq.original_topic"] == topic.encode()
        assert headers["dlq.original_partition"] == str(originals[original].partition).encode()
        assert headers["dlq.original_offset"] == str(originals[original].offset).encode()
        assert headers["dlq.consumer"] == running.name.encode()
        assert DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, list(record.headers)) <= 1_048_576
    assert len(dlq[0].value or b"") > 1_048_000  # cut by no more than it must be


class RefusingBroker:
    """A producer whose broker refuses messages larger than `limit` bytes, as a DLQ topic with a
    smaller `max.message.bytes` than its source does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or []) > self.limit:
            raise MessageSizeTooLargeError()
        self.sent.append((topic, key, value, list(headers or [])))


async def test_a_dead_letter_the_dlq_topic_refuses_as_too_large_is_sent_without_the_original_bytes(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine
) -> None:
    consumer = EventConsumer(
        name="kit-test-refused",
        topics=["cxkit-test.refused"],
        handlers={"customer.updated": applying("refused")},
        settings=kit_settings,
        session_factory=make_session_factory(kit_engine),
        processed_model=ProcessedEvent,
    )
    broker = RefusingBroker(limit=100_000)
    consumer._producer = broker  # type: ignore[assignment]
    value = sized(500_000)
    record = ConsumerRecord("cxkit-test.refused", 2, 41, 0, 0, b"k", value, None, 1, len(value), (("origin", b"kit-test"),))
    await consumer._send_to_dlq(record, "invalid customer.updated data: id: Field required")

    [(topic, key, sent, headers)] = broker.sent
    names = dict(headers)
    assert topic == "cxkit-test.refused.dlq" and sent == b"" and key is None  # the original lies at its offset
    assert names["dlq.truncated"] == b"all" and names["dlq.original_value_bytes"] == b"500000"
    assert names["dlq.reason"] == b"invalid customer.updated data: id: Field required"
    assert (names["dlq.original_topic"], names["dlq.original_partition"], names["dlq.original_offset"]) == (
        b"cxkit-test.refused",
        b"2",
        b"41",
    )


async def test_offsets_never_pass_an_event_the_database_has_not_applied_and_it_is_retried_without_loss(
    running: Running, sessions: Sessions
) -> None:
    topic = running.topics["transient"]
    customer = uuid.uuid4()
    names = ["Ada", "stuck", "Grace", "Hopper"]
    messages = [customer_event(customer, v, name) for v, name in enumerate(names, start=1)]
    await publish(running.bootstrap, topic, [(str(customer).encode(), m) for m in messages])

    async def retried() -> bool:
        return running.handler.calls["stuck"] >= 3

    await wait_for(retried, timeout=20)  # the database keeps failing on the second event
    before = [r.name for r in await applied(sessions, running.name) if r.customer_id == customer]
    assert before in ([], ["Ada"])  # the first, at most (if it came in a poll of its own)
    assert await running.committed(topic) == len(before)  # no offset past what the database holds

    running.handler.stuck = False  # the database is back
    await running.caught_up(topic, len(messages))
    rows = [r for r in await applied(sessions, running.name) if r.customer_id == customer]
    assert [(r.version, r.name) for r in rows] == [(1, "Ada"), (2, "stuck"), (3, "Grace"), (4, "Hopper")]
    assert await processed_ids(sessions, running.name) >= {r.event_id for r in rows}
    assert await read_topic(running.bootstrap, dlq_topic(topic), timeout=1) == []  # a transient failure is never dead


async def test_a_transaction_the_database_refuses_for_now_is_retried_whole_and_never_dead_lettered(
    running: Running, sessions: Sessions
) -> None:
    """A deadlock's victim or a full lock table is no fault of the events: the poll is rewound
    and applied again later, however long it takes, rather than split up and sent to the DLQ
    after a few quick attempts."""
    topic = running.topics["busy"]
    customer = uuid.uuid4()
    names = ["Ada", "busy", "Grace"]
    messages = [customer_event(customer, v, name) for v, name in enumerate(names, start=1)]
    await publish(running.bootstrap, topic, [(str(customer).encode(), m) for m in messages])

    async def retried() -> bool:
        return running.handler.calls["busy"] >= 4  # past the consumer's per-event attempts (2)

    await wait_for(retried, timeout=20)
    before = [r.name for r in await applied(sessions, running.name) if r.customer_id == customer]
    assert before in ([], ["Ada"])
    assert await running.committed(topic) == len(before)

    running.handler.busy = False
    await running.caught_up(topic, len(messages))
    rows = [r for r in await applied(sessions, running.name) if r.customer_id == customer]
    assert [(r.version, r.name) for r in rows] == [(1, "Ada"), (2, "busy"), (3, "Grace")]
    assert await read_topic(running.bootstrap, dlq_topic(topic), timeout=1) == []


async def test_a_small_read_ahead_still_brings_every_event_even_one_larger_than_it(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine
) -> None:
    """`consumer_fetch_max_bytes` bounds what a fetch brings, not what can be consumed: with 2 KiB
    a hundred events and one of 5 KiB all arrive, each applied once."""
    settings = kit_settings.model_copy(update={"consumer_fetch_max_bytes": 2048, "consumer_partition_fetch_max_bytes": 2048})
    sessions = make_session_factory(kit_engine)
    running = Running(settings, sessions, ["small-fetches"])
    topic = running.topics["small-fetches"]
    try:
        ids = [uuid.uuid4() for _ in range(100)]
        messages = [customer_event(cid, 1, f"n{n}") for n, cid in enumerate(ids)]
        messages.append(customer_event(ids[0], 2, "big", padding="x" * 5000))  # an extension attribute: no name is that long
        await publish(running.bootstrap, topic, [(b"k", m) for m in messages])
        await running.caught_up(topic, len(messages))
        fetcher = running.consumer._consumer._fetcher  # type: ignore[union-attr]
        assert (fetcher._fetch_max_bytes, fetcher._max_partition_fetch_bytes) == (2048, 2048)
    finally:
        await running.stop()
    rows = [r for r in await applied(sessions, running.name) if r.customer_id in set(ids)]
    assert sorted((r.customer_id, r.version) for r in rows) == sorted([(cid, 1) for cid in ids] + [(ids[0], 2)])


async def test_a_consumer_joins_its_group_after_half_its_session_timeout_on_the_dev_broker(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine, topic: str
) -> None:
    """The dev broker holds each join of a group for half the joining member's session timeout.
    The consumer asks for `CONSUMER_SESSION_TIMEOUT_MS` (3,000 ms under `DEV_BROKER_SETTINGS`),
    not aiokafka's own 10,000 ms, which made every consumer start wait 5 s there."""
    assert kit_settings.consumer_session_timeout_ms == DEV_BROKER_SETTINGS["consumer_session_timeout_ms"] == 3000
    consumer = EventConsumer(
        name=f"kit-test-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        handlers={"customer.updated": applying("join")},
        settings=kit_settings,
        session_factory=make_session_factory(kit_engine),
        processed_model=ProcessedEvent,
    )
    started = time.monotonic()
    task = asyncio.create_task(consumer.run())

    async def assigned() -> bool:
        return consumer.assigned

    try:
        await wait_for(assigned, timeout=20, interval=0.02)
        took = time.monotonic() - started
    finally:
        await settle(task)
        await consumer.stop()
    assert 1.4 < took < 4.0  # held for 1.5 s, not the 5 s of a 10 s session


async def test_a_poll_is_applied_with_the_garbage_collector_paused_and_it_runs_again_after(
    running: Running, sessions: Sessions
) -> None:
    """The poll's objects live until it commits: the collector would traverse them for nothing
    (cxkit.memory.collector_paused)."""
    topic = running.topics["collector"]
    names = [f"paused-{i}" for i in range(3)]
    messages = [customer_event(uuid.uuid4(), 1, name) for name in names]
    assert gc.isenabled()
    await publish(running.bootstrap, topic, [(b"k", m) for m in messages])
    await running.caught_up(topic, len(messages))
    assert {name: running.handler.collector_on[name] for name in names} == dict.fromkeys(names, False)
    assert gc.isenabled()
