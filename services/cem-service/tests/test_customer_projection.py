"""The CEM's copy of CRM customers, fed from `crm.customers.v1` on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy import func, select

from cem.config import CEMSettings
from cem.consumers import crm_customers
from cem.db import ProcessedEvent
from cxkit.dev_broker import DevBroker
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import CustomerCreated, CustomerUpdated
from cxkit.kafka.client import ensure_topics
from cxkit.kafka.consumer import Delivery, EventConsumer
from cxkit.testing import wait_for

TOPIC = "crm.customers.v1"


def snapshot(customer_id: uuid.UUID, version: int = 1, **fields: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "id": customer_id,
        "email": f"{customer_id.hex[:6]}@example.com",
        "name": "Ada",
        "version": version,
        "lifecycle_stage": "lead",
        "created_at": now,
        "updated_at": now,
        **fields,
    }


def event_bytes(event_type: str, data: Any) -> bytes:
    return encode_event(new_event(event_type, source="urn:cx:crm-service", subject=str(data.id), data=data))


@pytest.fixture
async def running_consumer(
    cem_app: FastAPI, cem_settings: CEMSettings, client: httpx.AsyncClient
) -> AsyncIterator[dict[str, Any]]:
    """The CEM's customer consumer on the real broker, with a counter around its handler."""
    calls: list[str] = []
    on_customer_snapshots = crm_customers.live_handlers(cem_app.state.customer_data)["customer.created"]

    async def counting(session: Any, deliveries: list[Delivery]) -> None:
        calls.extend(d.event.id for d in deliveries)
        await on_customer_snapshots(session, deliveries)

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer(
        name=group,
        topics=[TOPIC],
        handlers={"customer.created": counting, "customer.updated": counting},
        settings=cem_settings,
        session_factory=cem_app.state.session_factory,
        processed_model=ProcessedEvent,
    )
    await ensure_topics(cem_settings, [TOPIC])
    task = asyncio.create_task(consumer.run())
    yield {"calls": calls, "group": group}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await consumer.stop()


async def produce(broker: DevBroker, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(TOPIC, value=value, key=key)
    finally:
        await producer.stop()


async def test_customer_events_build_the_experience_customer(
    client: httpx.AsyncClient, broker: DevBroker, running_consumer: dict[str, Any]
) -> None:
    cid = uuid.uuid4()
    assert (await client.get(f"/v1/customers/{cid}/experience")).status_code == 404
    await produce(
        broker,
        [
            (str(cid).encode(), event_bytes("customer.created", CustomerCreated(**snapshot(cid)))),
            (
                str(cid).encode(),
                event_bytes("customer.updated", CustomerUpdated(**snapshot(cid, 2, lifecycle_stage="customer", name="Ada L."))),
            ),
        ],
    )

    async def updated() -> Any:
        r = await client.get(f"/v1/customers/{cid}/experience")
        return r.status_code == 200 and r.json()["customer"]["crm_version"] == 2 and r.json()

    body = await wait_for(updated, 10)
    assert body["customer"]["name"] == "Ada L." and body["customer"]["lifecycle_stage"] == "customer"


async def test_same_event_twice_has_one_effect_and_a_stale_version_never_wins(
    client: httpx.AsyncClient, broker: DevBroker, running_consumer: dict[str, Any], cem_app: FastAPI
) -> None:
    cid = uuid.uuid4()
    v2 = event_bytes("customer.updated", CustomerUpdated(**snapshot(cid, 2, name="New")))
    v1 = event_bytes("customer.created", CustomerCreated(**snapshot(cid, 1, name="Old")))
    marker = uuid.uuid4()
    await produce(
        broker,
        [
            (str(cid).encode(), v2),
            (str(cid).encode(), v2),
            (str(cid).encode(), v1),
            (str(marker).encode(), event_bytes("customer.created", CustomerCreated(**snapshot(marker)))),
        ],
    )
    await wait_for(lambda: _status(client, marker), 10)
    profile = (await client.get(f"/v1/customers/{cid}/experience")).json()["customer"]
    assert profile["name"] == "New" and profile["crm_version"] == 2
    v2_id = orjson.loads(v2)["id"]
    assert running_consumer["calls"].count(v2_id) == 1
    async with cem_app.state.session_factory() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(ProcessedEvent)
            .where(ProcessedEvent.consumer == running_consumer["group"], ProcessedEvent.event_id == v2_id)
        )
    assert count == 1


async def test_malformed_message_goes_to_dlq_with_reason_and_next_good_one_applies(
    client: httpx.AsyncClient, broker: DevBroker, running_consumer: dict[str, Any]
) -> None:
    good = uuid.uuid4()
    bad_messages = [
        b"{not json",
        orjson.dumps({"specversion": "1.0", "id": "x1", "source": "s", "type": "customer.created", "data": {"email": "no id"}}),
        orjson.dumps({"specversion": "1.0", "id": "x2", "source": "s", "type": "no.such.type", "data": {}}),
    ]
    await produce(
        broker,
        [(b"bad", m) for m in bad_messages]
        + [(str(good).encode(), event_bytes("customer.created", CustomerCreated(**snapshot(good))))],
    )
    await wait_for(lambda: _status(client, good), 10)

    dlq = AIOKafkaConsumer(
        f"{TOPIC}.dlq", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", group_id=f"dlq-{uuid.uuid4().hex[:6]}"
    )
    await dlq.start()
    found: dict[bytes, str] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while len(found) < 3 and asyncio.get_running_loop().time() < deadline:
            for records in (await dlq.getmany(timeout_ms=500)).values():
                for rec in records:
                    headers = dict(rec.headers)
                    if headers.get("dlq.consumer", b"").decode() == running_consumer["group"]:
                        found[rec.value] = headers["dlq.reason"].decode()
    finally:
        await dlq.stop()
    assert set(found) == set(bad_messages)
    assert found[b"{not json"].startswith("not JSON")
    assert "invalid customer.created data" in found[bad_messages[1]] and "id" in found[bad_messages[1]]
    assert "unknown event type 'no.such.type'" in found[bad_messages[2]]


async def _status(client: httpx.AsyncClient, cid: uuid.UUID) -> bool:
    return (await client.get(f"/v1/customers/{cid}/experience")).status_code == 200
