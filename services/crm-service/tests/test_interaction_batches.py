"""The `cx.interactions.v1` consumer applies whole polls with a few statements: a duplicate inside
one poll or across polls changes nothing, and a poll that fails is fetched again with the ones
after it (the next poll is read while one is being applied), so nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from fastapi import FastAPI
from sqlalchemy import func, select, text

from crm.config import CRMSettings
from crm.db import ProcessedEvent
from crm.interactions.models import CustomerInteractionStats, Interaction
from crm.interactions.repository import BATCH_COLUMNS, insert_interaction_batch, rebuild_stats
from crm.main import build_consumers
from cxkit.db import session_connection, utcnow
from cxkit.dev_broker import DevBroker
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import InteractionRecorded
from cxkit.kafka.client import ensure_topics
from cxkit.kafka.consumer import Delivery, EventConsumer
from cxkit.testing import wait_for

TOPIC = "cx.interactions.v1"


def recorded(customer_id: str, *, event_id: str | None = None, **data: Any) -> bytes:
    payload = InteractionRecorded(
        **{"customer_id": customer_id, "type": "purchase", "occurred_at": dt.datetime(2026, 5, 1, tzinfo=dt.UTC), **data}
    )
    event = new_event("interaction.recorded", source="urn:pos:store-7", subject=customer_id, data=payload)
    if event_id is not None:
        event.id = event_id
    return encode_event(event)


def poll(*values: bytes, partition: int = 0, first_offset: int = 0) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """One poll's worth of records, as aiokafka's `getmany` returns them."""
    records = [
        ConsumerRecord(TOPIC, partition, first_offset + i, 0, 0, b"k", value, None, 1, len(value), ())
        for i, value in enumerate(values)
    ]
    return {TopicPartition(TOPIC, partition): records}


def interactions_consumer(app: FastAPI, settings: CRMSettings) -> EventConsumer:
    consumers = {c.name: c for c in build_consumers(settings)(app.state.session_factory)}
    return consumers[f"{settings.consumer_group}.interactions"]


async def counts(session_factory: Any, consumer: str) -> tuple[int, int]:
    """(interactions stored, processed-event rows of `consumer`)."""
    async with session_factory() as session:
        stored = await session.scalar(select(func.count()).select_from(Interaction))
        processed = await session.scalar(select(func.count()).where(ProcessedEvent.consumer == consumer))
    return int(stored or 0), int(processed or 0)


async def test_duplicates_inside_a_poll_and_across_polls_are_applied_once(
    client: httpx.AsyncClient, make: Any, crm_app: FastAPI, crm_settings: CRMSettings, session_factory: Any
) -> None:
    settings = crm_settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}"})
    consumer = interactions_consumer(crm_app, settings)
    customer = (await make.customer())["id"]
    shared = uuid.uuid4()
    first = recorded(customer, event_id="evt-1", interaction_id=shared, amount="10.00")
    again_other_event = recorded(customer, event_id="evt-2", interaction_id=shared, amount="10.00")  # re-published
    other = recorded(customer, event_id="evt-3", summary="second purchase")

    # One poll holding the same message twice and a re-publication of its interaction.
    await consumer.process(poll(first, first, again_other_event, other))
    assert await counts(session_factory, consumer.name) == (2, 3)

    # Redelivered in a later poll (with something new): only the new one applies.
    late = recorded(customer, event_id="evt-4", metadata={"k": "v"})
    await consumer.process(poll(other, first, late, first_offset=4))
    assert await counts(session_factory, consumer.name) == (3, 4)

    rows = (await client.get("/v1/interactions", params={"customer_id": customer, "sort": "occurred_at"})).json()["items"]
    assert {r["id"] for r in rows} >= {str(shared)}
    assert {r["summary"] for r in rows} == {None, "second purchase"}
    assert [r["metadata"] for r in rows if r["metadata"]] == [{"k": "v"}]
    assert {r["source"] for r in rows} == {"urn:pos:store-7"}


async def test_a_poll_with_an_event_that_cannot_apply_goes_event_by_event_and_dead_letters_only_that_one(
    client: httpx.AsyncClient, make: Any, crm_app: FastAPI, crm_settings: CRMSettings, session_factory: Any, kafka: Any
) -> None:
    settings = crm_settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}"})
    consumer = interactions_consumer(crm_app, settings)
    consumer.topics = [f"{TOPIC}.test-{uuid.uuid4().hex[:8]}"]
    await ensure_topics(settings, consumer.topics)
    customer = (await make.customer())["id"]
    good = [recorded(customer, summary=f"n{i}") for i in range(3)]
    bad = recorded(str(uuid.uuid4()))  # an unknown customer
    task = asyncio.create_task(consumer.run())
    try:
        await kafka.produce(consumer.topics[0], [good[0], bad, good[1], b"not json", good[2]])

        async def all_good_stored() -> bool:
            return (await counts(session_factory, consumer.name))[0] == 3

        await wait_for(all_good_stored, 15)
        reasons = await kafka.dlq_reasons(f"{consumer.topics[0]}.dlq", consumer.name, expected=2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
    assert set(reasons) == {bad, b"not json"}
    assert "unknown customer_id" in reasons[bad] and "not JSON" in reasons[b"not json"]


SECRET_SUMMARY = "asked us to stop calling her at home"
SECRET_METADATA = {"note": "lives at 1 Hidden Lane"}


async def erased_customer_shows_none_of(client: httpx.AsyncClient, customer_id: str) -> list[dict[str, Any]]:
    """The erased customer's interactions, after checking that neither the list, the timeline nor
    the data export shows the event's free text."""
    listed = await client.get("/v1/interactions", params={"customer_id": customer_id})
    timeline = await client.get(f"/v1/customers/{customer_id}/timeline")
    export = await client.get(f"/v1/customers/{customer_id}/data-export")
    for answer in (listed, timeline, export):
        assert answer.status_code == 200, answer.text
        assert SECRET_SUMMARY not in answer.text and "Hidden Lane" not in answer.text
    return list(listed.json()["items"])


async def test_an_erased_customers_interaction_event_is_stored_without_its_summary_or_metadata(
    client: httpx.AsyncClient, make: Any, crm_app: FastAPI, crm_settings: CRMSettings, session_factory: Any
) -> None:
    """As the CEM does: the interaction counts (type, time, amount), its free text does not
    outlive the erasure, whether the event was published after it or was in flight before."""
    settings = crm_settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}"})
    consumer = interactions_consumer(crm_app, settings)
    customer = (await make.customer())["id"]
    assert (await client.delete(f"/v1/customers/{customer}")).status_code == 204

    event = recorded(customer, summary=SECRET_SUMMARY, metadata=SECRET_METADATA, amount="12.00", currency="EUR")
    await consumer.process(poll(event))
    assert await counts(session_factory, consumer.name) == (1, 1)
    [row] = await erased_customer_shows_none_of(client, customer)
    assert (row["summary"], row["metadata"], row["amount"], row["type"]) == (None, {}, "12.00", "purchase")
    stats = (await client.get(f"/v1/customers/{customer}/view")).json()["interaction_stats"]
    assert (stats["count"], stats["purchases"]) == (1, 1)


async def test_an_interaction_event_naming_a_duplicate_merged_into_an_erased_survivor_keeps_no_free_text(
    client: httpx.AsyncClient, make: Any, crm_app: FastAPI, crm_settings: CRMSettings, session_factory: Any
) -> None:
    settings = crm_settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}"})
    consumer = interactions_consumer(crm_app, settings)
    survivor, duplicate = (await make.customer())["id"], (await make.customer())["id"]
    assert (await client.post(f"/v1/customers/{survivor}/merge", json={"duplicate_id": duplicate})).status_code == 200
    assert (await client.delete(f"/v1/customers/{survivor}")).status_code == 204

    await consumer.process(poll(recorded(duplicate, summary=SECRET_SUMMARY, metadata=SECRET_METADATA)))
    assert await counts(session_factory, consumer.name) == (1, 1)
    [row] = await erased_customer_shows_none_of(client, survivor)
    assert (row["customer_id"], row["summary"], row["metadata"]) == (survivor, None, {})


async def test_an_interaction_event_with_an_erased_customers_former_email_does_not_reach_the_erased_record(
    client: httpx.AsyncClient, make: Any, crm_app: FastAPI, crm_settings: CRMSettings, session_factory: Any
) -> None:
    """Erasure blanks the email, so the address names nobody any more: the event makes a new
    lead-stage customer (as any unknown address does) and the erased record gets nothing."""
    settings = crm_settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}"})
    consumer = interactions_consumer(crm_app, settings)
    customer = await make.customer()
    assert (await client.delete(f"/v1/customers/{customer['id']}")).status_code == 204

    payload = InteractionRecorded(
        customer_email=customer["email"].upper(),
        type="call",
        occurred_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
        summary="a new call",
    )
    await consumer.process(poll(encode_event(new_event("interaction.recorded", source="urn:pbx", subject=None, data=payload))))
    assert await counts(session_factory, consumer.name) == (1, 1)
    assert await erased_customer_shows_none_of(client, customer["id"]) == []
    [row] = (await client.get("/v1/interactions")).json()["items"]
    assert row["customer_id"] != customer["id"] and row["summary"] == "a new call"
    lead = (await client.get(f"/v1/customers/{row['customer_id']}")).json()
    assert (lead["email"], lead["lifecycle_stage"], lead["erased_at"]) == (customer["email"], "lead", None)


class FailOnce:
    """Wraps a handler: its first run fails with a transient error (as when the database goes
    away mid-poll), slowly enough for the consumer to read and decode the next poll meanwhile."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.failed = False

    async def __call__(self, session: Any, deliveries: list[Delivery]) -> None:
        if not self.failed:
            self.failed = True
            await asyncio.sleep(0.5)
            raise ConnectionResetError("database went away")
        await self.handler(session, deliveries)


@pytest.fixture
async def small_polls(crm_app: FastAPI, crm_settings: CRMSettings, client: httpx.AsyncClient) -> AsyncIterator[Any]:
    """The interactions consumer on a topic of its own, two records per poll, its handler
    failing once (`start()` runs it)."""
    settings = crm_settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}", "consumer_max_records": 2})
    consumer = interactions_consumer(crm_app, settings)
    consumer.topics = [f"{TOPIC}.test-{uuid.uuid4().hex[:8]}"]
    await ensure_topics(settings, consumer.topics)
    tasks: list[asyncio.Task[None]] = []

    def start() -> FailOnce:
        wrapper = FailOnce(consumer.handlers["interaction.recorded"])
        consumer.handlers["interaction.recorded"] = wrapper
        tasks.append(asyncio.create_task(consumer.run()))
        return wrapper

    yield consumer, start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await consumer.stop()


async def test_a_poll_failing_midway_is_read_again_with_the_polls_after_it_and_nothing_applies_twice(
    make: Any, small_polls: Any, broker: DevBroker, session_factory: Any
) -> None:
    consumer, start = small_polls
    customers = [(await make.customer())["id"] for _ in range(3)]
    ids = [f"evt-{i}" for i in range(6)]
    # Two events in each of the three partitions, a poll of two at a time: when the first
    # poll fails, the poll read meanwhile (from another partition) must come again too.
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for n, event_id in enumerate(ids):
            customer = customers[n % 3]
            value = recorded(customer, event_id=event_id, summary=event_id)
            await producer.send_and_wait(consumer.topics[0], value, key=customer.encode(), partition=n % 3)
    finally:
        await producer.stop()
    wrapper = start()

    async def all_stored() -> bool:
        return (await counts(session_factory, consumer.name)) == (6, 6)

    await wait_for(all_stored, 20)
    assert wrapper.failed
    await asyncio.sleep(0.5)  # nothing more arrives
    assert await counts(session_factory, consumer.name) == (6, 6)


async def stats_mismatches(session_factory: Any) -> tuple[int, list[Any]]:
    """(customers with statistics, rows where the kept figures and a recount from the
    interactions differ, either way)."""
    async with session_factory() as session:
        kept = int(await session.scalar(select(func.count()).select_from(CustomerInteractionStats)) or 0)
        differing = (
            await session.execute(
                text(
                    "(SELECT 'kept', * FROM customer_interaction_stats EXCEPT SELECT 'kept', * FROM interaction_stats_from_rows) "
                    "UNION ALL "
                    "(SELECT 'rows', * FROM interaction_stats_from_rows EXCEPT SELECT 'rows', * FROM customer_interaction_stats)"
                )
            )
        ).all()
    return kept, list(differing)


async def test_interaction_stats_kept_as_rows_arrive_equal_a_recount_after_merges_and_erasure(
    crm_app: FastAPI, crm_settings: CRMSettings, client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    a, b, c = (await make.customer())["id"], (await make.customer())["id"], (await make.customer())["id"]
    at = "2026-05-0{}T10:00:00Z"
    # over HTTP: by id (the pool's one-statement write) and by email (the ORM path, a new lead)
    await make.interaction(customer_id=a, type="purchase", amount="10.00", currency="EUR", occurred_at=at.format(1))
    await make.interaction(customer_id=a, type="call", occurred_at=at.format(3))
    await make.interaction(customer_id=b, type="purchase", occurred_at=at.format(2))  # a purchase without an amount
    lead = (await make.interaction(customer_email="new.lead@example.com", type="purchase", amount="4.00", currency="EUR"))[
        "customer_id"
    ]
    # from Kafka: one poll, one statement, a duplicate inside it
    consumer = interactions_consumer(crm_app, crm_settings)
    twice = str(uuid.uuid4())
    await consumer.process(
        poll(
            recorded(a, amount=Decimal("5.50"), currency="EUR", event_id=twice, interaction_id=uuid.uuid4()),
            recorded(b, type="meeting", occurred_at=dt.datetime(2026, 5, 4, tzinfo=dt.UTC)),
            recorded(c, amount=Decimal("1.25"), currency="EUR"),
            recorded(a, amount=Decimal("5.50"), currency="EUR", event_id=twice, interaction_id=uuid.uuid4()),
        )
    )
    kept, differing = await stats_mismatches(session_factory)
    assert (kept, differing) == (4, [])
    stats = (await client.get(f"/v1/customers/{a}/view")).json()["interaction_stats"]
    assert (stats["count"], stats["purchases"], stats["purchase_total"], stats["average_order_value"]) == (3, 2, "15.50", "7.75")
    b_stats = (await client.get(f"/v1/customers/{b}/view")).json()["interaction_stats"]
    assert b_stats["purchases"] == 1 and b_stats["purchase_total"] is None and b_stats["average_order_value"] is None

    # a merge moves b's and the lead's rows onto a; an erasure scrubs c's text (figures stay)
    assert (await client.post(f"/v1/customers/{a}/merge", json={"duplicate_id": b})).status_code == 200
    assert (await client.post(f"/v1/customers/{a}/merge", json={"duplicate_id": lead})).status_code == 200
    assert (await client.delete(f"/v1/customers/{c}")).status_code == 204
    kept, differing = await stats_mismatches(session_factory)
    assert (kept, differing) == (2, [])
    merged = (await client.get(f"/v1/customers/{a}/view")).json()["interaction_stats"]
    assert (merged["count"], merged["purchases"], merged["purchase_total"]) == (6, 4, "19.50")
    assert merged["last_contacted_at"].startswith("2026-05-04")  # b's meeting

    # the rebuild command's recount leaves every figure as it was kept
    async with session_factory() as session, session.begin():
        before = (await session.execute(text("SELECT * FROM customer_interaction_stats ORDER BY customer_id"))).all()
        assert await rebuild_stats(session) == 2
        after = (await session.execute(text("SELECT * FROM customer_interaction_stats ORDER BY customer_id"))).all()
    assert before == after


def batch_columns(customer_ids: list[uuid.UUID]) -> tuple[list[Any], ...]:
    """`insert_interaction_batch`'s columns: one purchase per customer."""
    at = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    rows = [(uuid.uuid4(), cid, "purchase", None, None, at, None, None, None, "{}", "urn:pos:store-7") for cid in customer_ids]
    assert len(rows[0]) == len(BATCH_COLUMNS)
    return tuple(list(column) for column in zip(*rows, strict=True))


async def test_a_batch_checks_each_customer_once_and_stats_never_outlive_the_reference_they_rely_on(
    make: Any, session_factory: Any
) -> None:
    """The statistics hold no key of their own (crm0024): a row there comes only from the
    customer's interactions, whose reference already holds the customer. Storing a batch checks
    the customers once per interaction (it was twice for a customer's first one), and an
    interaction of no known customer is still refused, with no statistics left behind."""
    customers = [uuid.UUID((await make.customer())["id"]) for _ in range(20)]
    scans = "SELECT idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'customers'"
    async with session_factory() as session, session.begin():
        conn = await session_connection(session)
        before = await conn.fetchval(scans)
        assert await insert_interaction_batch(conn, batch_columns(customers), utcnow()) == len(customers)
        key_checks = await conn.fetchval(scans) - before
    assert key_checks == len(customers)
    async with session_factory() as session:
        stats = CustomerInteractionStats
        kept = await session.scalar(select(func.count()).where(stats.customer_id.in_(customers), stats.interactions == 1))
    assert kept == len(customers)

    nobody = uuid.uuid4()
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with session_factory() as session, session.begin():
            await insert_interaction_batch(await session_connection(session), batch_columns([nobody]), utcnow())
    async with session_factory() as session:
        assert await session.get(CustomerInteractionStats, nobody) is None
