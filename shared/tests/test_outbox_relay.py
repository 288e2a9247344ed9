"""The transactional outbox on its own (cxkit.kafka.outbox): rows written with `add_event` reach
the broker exactly once, each key's in outbox order, whether sent in batches, after a failed
round, by a running relay woken by the commit, or by two relays at once."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RequestTimedOutError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit import tracing
from cxkit.events.payloads import CustomerUpdated
from cxkit.kafka.client import make_producer, partition_for
from cxkit.kafka.outbox import ROUND_SETTINGS, OutboxRelay, add_event
from cxkit.settings import ServiceSettings
from cxkit.testing import enter_request_span, wait_for

from .conftest import SOURCE, Outbox, read_topic, settle

Sessions = async_sessionmaker[AsyncSession]


def diverted_to(topic: str) -> Callable[..., Outbox]:
    """The outbox model as `add_event` calls it (`model(**row)`), with the row's topic replaced
    by the test's own, so the relay sends to a topic no other test reads."""

    def build(**row: Any) -> Outbox:
        return Outbox(**{**row, "topic": topic})

    return build


async def write_events(sessions: Sessions, topic: str, versions: list[tuple[uuid.UUID, int]]) -> list[uuid.UUID]:
    """One transaction adding a `customer.updated` event per (customer, version); their ids."""
    async with sessions() as session, session.begin():
        return [
            add_event(
                session,
                diverted_to(topic),
                "customer.updated",
                source=SOURCE,
                subject=customer_id,
                data=CustomerUpdated(id=customer_id, version=version, changed=["name"]),
            )
            for customer_id, version in versions
        ]


async def outbox_rows(sessions: Sessions) -> list[Outbox]:
    async with sessions() as session:
        return list((await session.scalars(select(Outbox).order_by(Outbox.id))).all())


def interleaved(customers: list[uuid.UUID], versions: int) -> list[tuple[uuid.UUID, int]]:
    """Every customer's versions 1..n, the customers taking turns."""
    return [(c, v) for v in range(1, versions + 1) for c in customers]


async def assert_sent_once_in_order(
    settings: ServiceSettings, sessions: Sessions, topic: str, written: list[tuple[uuid.UUID, int]]
) -> list[ConsumerRecord[bytes, bytes]]:
    """The topic holds every outbox row's event exactly once, and each customer's versions in
    the order written, keyed by the customer (so on one partition)."""
    records = await read_topic(settings.kafka_bootstrap_servers, topic, at_least=len(written))
    events = [orjson.loads(r.value) for r in records]
    assert Counter(e["id"] for e in events) == Counter(str(r.event_id) for r in await outbox_rows(sessions))
    assert len(events) == len(written)
    for customer_id in {c for c, _ in written}:
        mine = [(e["data"]["version"], r.key) for e, r in zip(events, records, strict=True) if e["subject"] == str(customer_id)]
        assert [v for v, _ in mine] == [v for c, v in written if c == customer_id]
        assert {k for _, k in mine} == {str(customer_id).encode()}
    return records


async def all_sent(sessions: Sessions) -> bool:
    rows = await outbox_rows(sessions)
    return bool(rows) and all(r.sent_at is not None for r in rows)


@pytest.fixture
def relay_settings(kit_settings: ServiceSettings) -> ServiceSettings:
    return kit_settings.model_copy(update={"outbox_batch_size": 5})


@pytest.fixture(params=["in batches", "one by one"])
def sending(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, relay_settings: ServiceSettings) -> ServiceSettings:
    """The relay's two ways of sending: in batches (of 1 KiB here, so that a round's rows of
    one partition span several), and one `send` per row, as when spans are recorded."""
    if request.param == "one by one":
        monkeypatch.setattr(tracing, "recording", lambda: True)
        return relay_settings
    return relay_settings.model_copy(update={"kafka_producer_batch_bytes": 1024})


class BrokerTrouble:
    """Broker trouble as the relay's producer meets it, from its `nth` message on (with `key`,
    counting and troubling only that key's messages, or in batches those to its partition: that
    partition is away): sending raises (no metadata for the topic, buffer full), or the message
    is taken but its acknowledgement never comes (the future fails; nothing reached the
    broker), or each send is just slow. A batch (`send_batch`) meets it as a whole, as a
    partition's batch does at a real broker. `passed` counts the messages sent before the
    trouble began."""

    def __init__(self, producer: AIOKafkaProducer, nth: int, how: str, key: bytes | None = None) -> None:
        self.producer = producer
        self.real_send = producer.send
        self.real_send_batch = producer.send_batch
        self.nth = nth
        self.how = how
        self.key = key
        self.calls = 0
        self.passed = 0
        self.troubled = False
        self.began = asyncio.Event()  # set at the first troubled message
        producer.send = self.send  # type: ignore[method-assign]
        producer.send_batch = self.send_batch  # type: ignore[method-assign]

    async def send(self, topic: str, **message: Any) -> asyncio.Future[Any]:
        mine = self.key is None or message.get("key") == self.key
        return await self._meet(mine, 1, lambda: self.real_send(topic, **message))

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        known = sorted(self.producer.client.cluster.partitions_for_topic(topic))
        mine = self.key is None or partition == partition_for(self.key, known, known)
        return await self._meet(mine, batch.record_count(), lambda: self.real_send_batch(batch, topic, partition=partition))

    async def _meet(self, mine: bool, messages: int, sending: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        if mine:
            self.calls += messages
        if not mine or self.calls < self.nth:
            self.passed += 0 if self.troubled else messages
            return await sending()
        self.troubled = True
        self.began.set()
        if self.how == "slow":
            await asyncio.sleep(0.05)
            return await sending()
        if self.how == "send raises":
            raise KafkaTimeoutError("no metadata for the topic")
        lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lost.set_exception(RequestTimedOutError("no acknowledgement"))
        lost.add_done_callback(lambda f: f.exception())  # those after the first are never awaited
        return lost

    def end(self) -> None:
        self.producer.send = self.real_send  # type: ignore[method-assign]
        self.producer.send_batch = self.real_send_batch  # type: ignore[method-assign]


async def drain(relay: OutboxRelay) -> int:
    """Relay rounds until one finds nothing to send; the rows this relay sent."""
    total = 0
    while sent := await relay.relay_once():
        total += sent
    return total


async def test_relay_sends_each_row_once_batch_by_batch_in_outbox_order(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    written = interleaved([uuid.uuid4() for _ in range(3)], versions=4)
    request = contextvars.copy_context()  # the writes run in a request's trace
    traceparent = request.run(enter_request_span)
    await asyncio.create_task(write_events(sessions, topic, written), context=request)
    relay = OutboxRelay(relay_settings, sessions, Outbox, [topic])
    try:
        assert [await relay.relay_once() for _ in range(4)] == [5, 5, 2, 0]  # batches of 5, then nothing left
    finally:
        await relay.stop()

    rows = await outbox_rows(sessions)
    assert all(r.sent_at is not None and r.attempts == 0 and r.last_error is None for r in rows)
    stored = {str(r.event_id): r.value for r in rows}
    for record in await assert_sent_once_in_order(relay_settings, sessions, topic, written):
        assert record.value == stored[orjson.loads(record.value)["id"]]  # the stored bytes, as they are
        assert dict(record.headers) == {
            "content-type": b"application/cloudevents+json",
            "ce_type": b"customer.updated",
            "traceparent": traceparent.encode(),  # the trace goes on through the broker
        }


async def test_stamping_a_row_sent_writes_its_new_version_on_the_same_page(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    """Inserts leave half of each outbox page free (`OUTBOX_FILLFACTOR`), so the relay's update
    of `sent_at` stays on the row's page, where PostgreSQL logs only the bytes that changed; on
    full pages the new versions went to other pages, logged whole."""
    ids = await write_events(sessions, topic, interleaved([uuid.uuid4() for _ in range(4)], versions=15))

    async def pages() -> dict[uuid.UUID, tuple[int, bool]]:
        """Each row's page, and whether it is stamped sent."""
        async with sessions() as session:
            found = await session.execute(
                text("SELECT event_id, (ctid::text::point)[0]::int, sent_at IS NOT NULL FROM outbox WHERE event_id = ANY(:ids)"),
                {"ids": ids},
            )
            return {event_id: (page, sent) for event_id, page, sent in found.all()}

    before = await pages()
    relay = OutboxRelay(relay_settings.model_copy(update={"outbox_batch_size": 500}), sessions, Outbox, [topic])
    try:
        await drain(relay)
    finally:
        await relay.stop()
    assert len({page for page, _ in before.values()}) > 2  # the rows fill several pages
    assert await pages() == {event_id: (page, True) for event_id, (page, _) in before.items()}


@pytest.mark.parametrize("batch_kib", [None, 64])
async def test_the_relay_sends_a_round_in_batches_of_the_set_size(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str, batch_kib: int | None
) -> None:
    """`KAFKA_PRODUCER_BATCH_BYTES` (256 KiB unless set) bounds how much of a round goes to a
    partition as one batch; with aiokafka's own 16 KiB, a round of 500 events went out in
    about twenty batches per partition, and sending them was half the relay's time."""
    settings = relay_settings
    if batch_kib is not None:
        settings = relay_settings.model_copy(update={"kafka_producer_batch_bytes": batch_kib * 1024})
    relay = OutboxRelay(settings, sessions, Outbox, [topic])
    try:
        batch = (await relay._ensure_producer()).create_batch()
        events = 0
        while batch.append(key=None, value=b"x" * 1000, timestamp=None) is not None:
            events += 1
    finally:
        await relay.stop()
    size = settings.kafka_producer_batch_bytes
    assert size == (batch_kib or 256) * 1024
    assert 0.95 * size < events * 1000 <= size  # full up to the limit, less the records' own overhead


async def test_an_untraced_round_goes_to_the_producer_as_one_batch_per_partition(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    """Unless spans are recorded, the relay hands the producer whole batches (`send_batch`)
    rather than a `send` per row, which makes a future per message: relaying 50,000 events
    took 3 µs of CPU each instead of 12 for the sending."""
    written = interleaved([uuid.uuid4() for _ in range(6)], versions=5)
    await write_events(sessions, topic, written)
    relay = OutboxRelay(relay_settings.model_copy(update={"outbox_batch_size": 100}), sessions, Outbox, [topic])
    batches: list[tuple[int, int]] = []
    try:
        producer = await relay._ensure_producer()
        send_batch = producer.send_batch

        async def one_by_one(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a send per row")

        async def counted(batch: Any, topic: str, *, partition: int) -> Any:
            batches.append((partition, batch.record_count()))
            return await send_batch(batch, topic, partition=partition)

        producer.send = one_by_one  # type: ignore[method-assign]
        producer.send_batch = counted  # type: ignore[method-assign]
        assert await relay.relay_once() == len(written)
        partitions = sorted(producer.client.cluster.partitions_for_topic(topic))
    finally:
        await relay.stop()
    rows = Counter(partition_for(str(customer).encode(), partitions, partitions) for customer, _ in written)
    assert sorted(batches) == sorted(rows.items())  # each partition's rows in one batch
    await assert_sent_once_in_order(relay_settings, sessions, topic, written)


def test_a_producer_batch_larger_than_apache_kafkas_message_limit_is_refused(kit_settings: ServiceSettings) -> None:
    with pytest.raises(ValidationError, match="kafka_producer_batch_bytes"):
        ServiceSettings.model_validate({**kit_settings.model_dump(), "kafka_producer_batch_bytes": 2 * 1024 * 1024})


# Kafka's own murmur2 test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2):
# key -> the signed 32-bit hash.
_KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


async def test_keys_go_to_the_partitions_kafkas_own_clients_choose(kit_settings: ServiceSettings) -> None:
    """The producers' partitioner is `partition_for`, and it places every key where aiokafka's
    `DefaultPartitioner` and Kafka's Java clients do: a key keeps its partition, so its events
    stay in order, whichever client published them."""
    producer = make_producer(kit_settings)
    try:
        assert producer._partitioner is partition_for
    finally:
        await producer.stop()  # never started: nothing to close but the object
    for key, signed in _KAFKA_MURMUR2.items():
        for n in (1, 3, 6, 7, 64):
            assert partition_for(key, list(range(n)), []) == (signed & 0x7FFFFFFF) % n
    rng = random.Random(7)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(5000)]
    keys += [rng.randbytes(length) for length in range(70) for _ in range(20)]
    default = DefaultPartitioner()
    for n in (1, 2, 3, 6, 12):
        partitions = list(range(n))
        assert [partition_for(k, partitions, partitions) for k in keys] == [default(k, partitions, partitions) for k in keys]
    # A keyless message goes to one of the available partitions.
    assert {partition_for(None, [0, 1, 2], [2]) for _ in range(20)} == {2}


@pytest.mark.parametrize("how", ["send raises", "no acknowledgement"])
async def test_a_failed_send_stops_the_round_and_the_next_round_sends_the_rest_once(
    sending: ServiceSettings, sessions: Sessions, topic: str, how: str
) -> None:
    customer = uuid.uuid4()
    written = interleaved([customer], versions=5)
    await write_events(sessions, topic, written)
    relay = OutboxRelay(sending, sessions, Outbox, [topic])
    try:
        trouble = BrokerTrouble(await relay._ensure_producer(), nth=3, how=how)
        with pytest.raises((KafkaTimeoutError, RequestTimedOutError)):
            await relay.relay_once()
        rows = await outbox_rows(sessions)
        # One by one, the first two are sent; in 1 KiB batches (two of these events each), the
        # first batch.
        acknowledged = trouble.passed
        assert acknowledged == 2
        assert [r.sent_at is not None for r in rows] == [True, True, False, False, False]  # what was acknowledged
        assert [r.attempts for r in rows] == [0, 0, 1, 0, 0]  # the row that failed, and only it
        assert rows[2].last_error and ("no metadata" in rows[2].last_error or "acknowledgement" in rows[2].last_error)

        trouble.end()  # the broker is back
        assert await relay.relay_once() == 3
        assert await relay.relay_once() == 0
    finally:
        await relay.stop()
    await assert_sent_once_in_order(sending, sessions, topic, written)


class FailingFanout:
    """An `on_sent` whose insert fails the first `failures` times (the database refused it)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.added = 0

    async def add(self, conn: Any, rows: list[Any]) -> int:
        if self.failures:
            self.failures -= 1
            await conn.execute("SELECT 1 / 0")
        self.added += len(rows)
        return len(rows)

    def committed(self) -> None:
        pass


async def test_a_round_that_fails_inside_its_transaction_rolls_it_back_and_frees_the_lock(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str, kit_engine: AsyncEngine
) -> None:
    """The relay begins and commits its round's transaction itself (BEGIN with the lock, the
    update with COMMIT): a round that fails in between leaves neither an open transaction on the
    pooled connection nor the relays' lock held, and marks nothing sent, so the next round
    sends the same rows (the broker got them twice: at least once, as a failed round always
    allowed)."""
    written = interleaved([uuid.uuid4()], versions=3)
    await write_events(sessions, topic, written)
    fanout = FailingFanout(failures=1)
    relay = OutboxRelay(relay_settings, sessions, Outbox, [topic], on_sent=fanout)  # type: ignore[arg-type]
    other = OutboxRelay(relay_settings, sessions, Outbox, [topic])
    try:
        with pytest.raises(Exception, match="division by zero"):
            await relay.relay_once()
        assert [r.sent_at for r in await outbox_rows(sessions)] == [None, None, None]
        # Every pooled connection is out of any transaction, and the lock is free: another
        # relay's round neither waits nor fails.
        assert kit_engine.sync_engine.pool.checkedout() == 0
        async with kit_engine.connect() as conn:
            left_open = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
            )
            advisory = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
        assert (left_open, advisory) == (0, 0)
        assert await asyncio.wait_for(other.relay_once(), timeout=5) == 3
        assert fanout.added == 0
    finally:
        await relay.stop()
        await other.stop()
    records = await read_topic(relay_settings.kafka_bootstrap_servers, topic, at_least=6)
    assert len(records) == 6  # the failed round's sends, then the second relay's


async def test_a_round_claims_from_the_unsent_index_when_the_statistics_still_say_empty(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str, kit_engine: AsyncEngine
) -> None:
    """An outbox analysed while empty, then filled by a burst. A relay's connection prepared
    its claim and ran it while the table was empty, so PostgreSQL keeps a generic plan made
    for an empty table: a scan of the whole outbox and a sort (at 200,000 rows, 370 ms a round,
    the sort on disk). Planned with a round's own settings, the claim walks the partial index on
    unsent ids instead, which hands out the lowest ids in order at any size."""
    table = Outbox.__tablename__
    relay = OutboxRelay(relay_settings, sessions, Outbox, [topic])
    claim = relay._select_unsent  # the statement a round runs
    batch = relay_settings.outbox_batch_size

    def nodes(plan: dict[str, Any]) -> list[str]:
        return [f"{plan['Node Type']} {plan.get('Index Name', '')}".strip()] + [
            n for child in plan.get("Plans", []) for n in nodes(child)
        ]

    async with kit_engine.connect() as conn:
        # Analysed empty, as after a quiet spell (vacuum gives the empty pages back).
        await conn.execute(text(f"TRUNCATE {table}"))
        await conn.execute(text(f"ANALYZE {table}"))
        await conn.commit()
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        plans = {"without": "SELECT 1", "with": ROUND_SETTINGS}
        for name, settings in plans.items():
            async with driver.transaction():
                await driver.execute(settings)
                await driver.execute(f"PREPARE claim_{name}(int) AS {claim}")
                for _ in range(6):  # past the custom plans PostgreSQL tries first
                    await driver.execute(f"EXECUTE claim_{name}({batch})")
        await conn.execute(
            text(
                f"INSERT INTO {table} (event_id, topic, key, event_type, value, headers, created_at) "
                "SELECT gen_random_uuid(), :topic, 'k' || (n % 7), 'customer.updated', "
                "convert_to('{\"n\": ' || n || ', \"pad\": \"' || repeat('x', 1000) || '\"}', 'UTF8'), '{}', now() "
                "FROM generate_series(1, 2000) AS n"
            ),
            {"topic": topic},
        )
        await conn.commit()
        shapes = {}
        for name, settings in plans.items():
            async with driver.transaction():
                await driver.execute(settings)
                doc = await driver.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE claim_{name}({batch})")  # json codec: decoded
            shapes[name] = nodes(doc[0]["Plan"])
            await driver.execute(f"DEALLOCATE claim_{name}")
    assert "Sort" in shapes["without"]  # the trap
    assert "Sort" not in shapes["with"]
    assert "Index Scan ix_outbox_unsent" in shapes["with"]

    try:
        assert await relay.relay_once() == batch
    finally:
        await relay.stop()
    rows = await outbox_rows(sessions)  # in id order
    assert [r for r in rows if r.sent_at is not None] == rows[:batch]  # the lowest ids, and only those
    records = await read_topic(relay_settings.kafka_bootstrap_servers, topic, at_least=batch)
    assert sorted(orjson.loads(r.value)["n"] for r in records) == list(range(1, batch + 1))


async def test_when_one_keys_messages_fail_nothing_is_lost_and_each_key_stays_in_order(
    sending: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    ada, bob = uuid.uuid4(), uuid.uuid4()
    written = interleaved([ada, bob], versions=3)  # ada 1, bob 1, ada 2, bob 2, ada 3, bob 3
    await write_events(sessions, topic, written)
    relay = OutboxRelay(sending.model_copy(update={"outbox_batch_size": 10}), sessions, Outbox, [topic])
    try:
        # Ada's partition goes away after her first event; Bob's stays (or goes too, when
        # they share a partition).
        trouble = BrokerTrouble(await relay._ensure_producer(), nth=2, how="no acknowledgement", key=str(ada).encode())
        with pytest.raises(RequestTimedOutError):
            await relay.relay_once()
        marked = [r.sent_at is not None for r in await outbox_rows(sessions)]
        assert marked == sorted(marked, reverse=True) and not marked[2]  # acknowledged up to Ada's second at most
        trouble.end()
        assert await drain(relay) == marked.count(False)
    finally:
        await relay.stop()

    records = await read_topic(sending.kafka_bootstrap_servers, topic, at_least=len(written))
    events = [orjson.loads(r.value) for r in records]
    for customer in (ada, bob):
        versions = [e["data"]["version"] for e in events if e["subject"] == str(customer)]
        assert list(dict.fromkeys(versions)) == [1, 2, 3]  # every event, first seen in order
    assert [e["data"]["version"] for e in events if e["subject"] == str(ada)] == [1, 2, 3]  # the failed key: once each
    # Bob's events after the failed one were acknowledged but not marked (a round stops at its first
    # failure), so they went again: at least once, never lost; consumers drop repeats by event id.
    twice = [e["data"]["version"] for e in events if e["subject"] == str(bob)][3:]
    assert twice in ([], [3], [2, 3], [1, 2, 3])


async def test_a_running_relay_sends_a_commit_at_once_and_nothing_of_a_rollback(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    # Polling once a minute: only the commit's wake-up can have it sent within seconds.
    relay = OutboxRelay(relay_settings.model_copy(update={"outbox_poll_interval_ms": 60_000}), sessions, Outbox, [topic])
    running = asyncio.create_task(relay.run())
    customer = uuid.uuid4()

    async def connected() -> bool:
        return relay.connected

    try:
        await wait_for(connected, timeout=10)
        await asyncio.sleep(0.1)  # its first (empty) round is done: it waits for a wake-up
        async with sessions() as session:
            data = CustomerUpdated(id=customer, version=1, changed=["name"])
            add_event(session, diverted_to(topic), "customer.updated", source=SOURCE, subject=customer, data=data)
            await session.flush()  # the row exists inside the transaction...
            await session.rollback()  # ...which is then undone
        committed = await write_events(sessions, topic, [(customer, 2)])
        await wait_for(lambda: all_sent(sessions), timeout=5)
    finally:
        await settle(running)
        await relay.stop()
    records = await read_topic(relay_settings.kafka_bootstrap_servers, topic, at_least=1)
    assert [orjson.loads(r.value)["id"] for r in records] == [str(committed[0])]
    assert len(await outbox_rows(sessions)) == 1


async def test_a_running_relay_retries_a_failed_round_without_loss_or_duplicate(
    sending: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    written = interleaved([uuid.uuid4(), uuid.uuid4()], versions=3)
    await write_events(sessions, topic, written)
    relay = OutboxRelay(sending, sessions, Outbox, [topic])
    trouble = BrokerTrouble(await relay._ensure_producer(), nth=2, how="no acknowledgement")  # its first round fails
    running = asyncio.create_task(relay.run())
    try:
        await wait_for(lambda: all_sent(sessions), timeout=10)
    finally:
        await settle(running)
        await relay.stop()
    rows = await outbox_rows(sessions)
    # The first row not acknowledged (the second one by one; in batches of two, the first) was
    # tried once more, and no other.
    assert [r.attempts for r in rows] == [int(i == trouble.passed) for i in range(len(rows))]
    await assert_sent_once_in_order(sending, sessions, topic, written)


async def test_two_relays_on_one_outbox_take_turns_never_sending_a_row_twice_or_out_of_order(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    written = interleaved([uuid.uuid4() for _ in range(4)], versions=5)
    await write_events(sessions, topic, written)
    slow, fast = (OutboxRelay(relay_settings, sessions, Outbox, [topic]) for _ in range(2))
    trouble = BrokerTrouble(await slow._ensure_producer(), nth=1, how="slow")
    try:
        slow_share = asyncio.create_task(drain(slow))
        async with asyncio.timeout(30):
            await trouble.began.wait()  # the slow relay holds the oldest rows, not yet sent
        shares = [await drain(fast), await slow_share]
    finally:
        await slow.stop()
        await fast.stop()
    assert sum(shares) == len(written) and all(shares)
    await assert_sent_once_in_order(relay_settings, sessions, topic, written)


class TooLargeForTheTopic:
    """A broker that refuses one key's messages for good, as a topic whose `max.message.bytes`
    is below them does; in batches, the batch holding one fails as a whole, the good messages in
    it too. Every other message goes through."""

    def __init__(self, producer: AIOKafkaProducer, key: bytes) -> None:
        self.key = key
        self.real_send = producer.send
        self.real_send_batch = producer.send_batch
        self.real_create_batch = producer.create_batch
        self.holding: set[int] = set()  # id() of the batches holding a refused message
        producer.send = self.send  # type: ignore[method-assign]
        producer.send_batch = self.send_batch  # type: ignore[method-assign]
        producer.create_batch = self.create_batch  # type: ignore[method-assign]

    @staticmethod
    def refused() -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(MessageSizeTooLargeError("the message is larger than the topic's max.message.bytes"))
        future.add_done_callback(lambda f: f.exception())
        return future

    async def send(self, topic: str, **message: Any) -> asyncio.Future[Any]:
        return self.refused() if message.get("key") == self.key else await self.real_send(topic, **message)

    def create_batch(self) -> Any:
        batch = self.real_create_batch()
        append = batch.append

        def noting(*, key: bytes | None, **record: Any) -> Any:
            appended = append(key=key, **record)
            if appended is not None and key == self.key:
                self.holding.add(id(batch))
            return appended

        batch.append = noting
        return batch

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        return self.refused() if id(batch) in self.holding else await self.real_send_batch(batch, topic, partition=partition)


def _partition(customer: uuid.UUID) -> int:
    return partition_for(str(customer).encode(), [0, 1, 2], [])  # the test topics have 3


# README.md ("An outbox row that fails for good"): how an operator sets such a row aside.
SET_ASIDE = (
    "CREATE TABLE IF NOT EXISTS outbox_set_aside (LIKE outbox)",
    "WITH moved AS (DELETE FROM outbox WHERE id = {id} AND sent_at IS NULL RETURNING *) "
    "INSERT INTO outbox_set_aside SELECT * FROM moved",
)


async def test_a_row_that_fails_for_good_is_reported_once_and_in_the_metrics_and_can_be_set_aside(
    sending: ServiceSettings, sessions: Sessions, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A row the broker refuses for good (larger than its topic takes) heads every round and
    fails it, holding back every row after it; its `attempts` counted each failure, read by no
    one, and in batches the count went to the batch's first row (here a good row before it on
    its partition), and the rows acknowledged on other partitions were sent again each round.
    Now a first row that failed twice goes alone: the good one goes, the bad one is counted as
    itself and nothing behind it is sent again. At STUCK_AFTER_ATTEMPTS the relay says so once,
    as an error naming the row and the broker's reason, and `outbox_failed_row_attempts` shows
    the count; set aside as the README says, the rest goes and the gauge is back to 0."""
    from cxkit.kafka.outbox import STUCK_AFTER_ATTEMPTS
    from cxkit.metrics import exposition
    from cxkit.testing import metric_total

    settings = sending.model_copy(update={"service_name": f"kit-stuck-{uuid.uuid4().hex[:6]}", "outbox_batch_size": 10})
    huge = uuid.uuid4()
    customers = (uuid.uuid4() for _ in iter(int, 1))
    mate = next(c for c in customers if _partition(c) == _partition(huge))  # in the same batch, before it
    elsewhere = [next(c for c in customers if _partition(c) != _partition(huge)) for _ in range(2)]
    written = [(mate, 1), (huge, 1), *interleaved(elsewhere, versions=2)]
    await write_events(sessions, topic, written)
    relay = OutboxRelay(settings, sessions, Outbox, [topic])

    def attempts_gauge() -> float:
        return metric_total(exposition()[0].decode(), "outbox_failed_row_attempts", service=settings.service_name)

    def reports() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "cxkit.kafka.outbox" and r.levelno >= logging.ERROR]

    caplog.set_level(logging.WARNING, logger="cxkit.kafka.outbox")
    rounds = 0
    try:
        TooLargeForTheTopic(await relay._ensure_producer(), str(huge).encode())
        while not reports() and rounds < 40:
            rounds += 1
            with contextlib.suppress(MessageSizeTooLargeError):
                await relay.relay_once()
        rows = await outbox_rows(sessions)
        bad = rows[1]
        assert bad.attempts == STUCK_AFTER_ATTEMPTS and attempts_gauge() == STUCK_AFTER_ATTEMPTS
        assert rows[0].sent_at is not None and rows[0].attempts <= 2  # the good one went, alone
        assert [r.sent_at for r in rows[1:]] == [None] * (len(rows) - 1)  # the rest wait behind the bad one
        [report] = reports()
        said = report.getMessage() + repr(report.__dict__)
        assert str(bad.id) in said and str(bad.event_id) in said and "max.message.bytes" in said, said

        for more in range(1, 3):  # still failing: counted, not reported again
            with pytest.raises(MessageSizeTooLargeError):
                await relay.relay_once()
            assert attempts_gauge() == STUCK_AFTER_ATTEMPTS + more
        assert len(reports()) == 1
        # The rows behind it went only in the rounds before a row was sent alone (two for the good
        # row's count in batches, two for the bad one's), not in each of the dozen rounds.
        copies = Counter(orjson.loads(r.value)["id"] for r in await read_topic(settings.kafka_bootstrap_servers, topic))
        assert rounds + 2 >= 12 and max(copies[str(r.event_id)] for r in rows[2:]) <= 4, (rounds, copies)

        async with sessions() as session, session.begin():
            for statement in SET_ASIDE:
                await session.execute(text(statement.format(id=bad.id)))
        assert await drain(relay) == len(written) - 2
        assert attempts_gauge() == 0
        assert len(reports()) == 1
    finally:
        await relay.stop()
        async with sessions() as session, session.begin():
            await session.execute(text("DROP TABLE IF EXISTS outbox_set_aside"))
    left = await outbox_rows(sessions)
    assert [r.event_id for r in left] == [r.event_id for r in rows if r.id != bad.id]
    assert all(r.sent_at is not None for r in left)
