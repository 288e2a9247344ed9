"""Both consumers of the CEM on the real broker, as the app builds them: interactions from an
outside system (a hand-written CloudEvent) trigger a survey, a malformed one goes to the DLQ;
CRM merges, erasures and completed follow-up tasks arrive through crm.customers.v1."""

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
from sqlalchemy import select

from cem.config import CEMSettings
from cem.followups.models import Followup
from cem.main import build_consumers
from cxkit.dev_broker import DevBroker
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import CustomerCreated, CustomerErased, CustomerMerged, CustomerSnapshot, TaskCompleted
from cxkit.testing import wait_for

from .conftest import snapshot


@pytest.fixture
async def consumers(cem_app: FastAPI, cem_settings: CEMSettings, client: httpx.AsyncClient) -> AsyncIterator[CEMSettings]:
    """The app's consumers under a consumer group of this test's own."""
    settings = cem_settings.model_copy(update={"consumer_group": f"cem-test-{uuid.uuid4().hex[:8]}"})
    running = build_consumers(settings, cem_app.state.customer_data)(cem_app.state.session_factory)
    tasks = [asyncio.create_task(c.run()) for c in running]
    yield settings
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for consumer in running:
        await consumer.stop()


async def publish(broker: DevBroker, topic: str, *messages: tuple[bytes, bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


def crm_event(event_type: str, data: Any, subject: uuid.UUID) -> tuple[bytes, bytes]:
    return str(subject).encode(), encode_event(
        new_event(event_type, source="urn:cx:crm-service", subject=str(subject), data=data)
    )


async def dead_letters(broker: DevBroker, topic: str, consumer: str, want: int) -> dict[bytes, str]:
    """{message value: DLQ reason} of what `consumer` sent to `<topic>.dlq`."""
    dlq = AIOKafkaConsumer(f"{topic}.dlq", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", group_id=None)
    await dlq.start()
    found: dict[bytes, str] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while len(found) < want and loop.time() < deadline:
            for records in (await dlq.getmany(timeout_ms=300)).values():
                for rec in records:
                    headers = dict(rec.headers)
                    if headers.get("dlq.consumer", b"").decode() == consumer:
                        found[rec.value] = headers["dlq.reason"].decode()
    finally:
        await dlq.stop()
    return found


async def test_an_outside_systems_interaction_triggers_a_survey_and_a_malformed_one_goes_to_the_dlq(
    client: httpx.AsyncClient, make: Any, broker: DevBroker, consumers: CEMSettings
) -> None:
    kind = f"purchase-{uuid.uuid4().hex[:6]}"  # other tests' interactions on the shared topic never match
    survey = await make.survey("nps", trigger={"interaction_type": kind})
    customer = await make.customer()
    hand_written = {
        "specversion": "1.0",
        "id": f"pos-{uuid.uuid4()}",
        "source": "urn:pos:store-17",
        "type": "interaction.recorded",
        "time": "2026-11-23T10:00:00Z",
        "data": {
            "customer_id": str(customer),
            "type": kind,
            "channel": "store",
            "touchpoint": "checkout",
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
            "amount": 42.5,
            "currency": "EUR",
        },
    }
    no_customer = {k: v for k, v in hand_written["data"].items() if k != "customer_id"}
    malformed = orjson.dumps({**hand_written, "id": f"bad-{uuid.uuid4()}", "data": no_customer})
    # A NUL the database cannot store, in the free JSON where the schema cannot say so.
    with_nul = orjson.dumps(
        {**hand_written, "id": f"nul-{uuid.uuid4()}", "data": {**hand_written["data"], "metadata": {"note": "a\x00b"}}}
    )
    await publish(
        broker,
        "cx.interactions.v1",
        (b"bad", malformed),
        (b"nul", with_nul),
        (str(customer).encode(), orjson.dumps(hand_written)),
    )
    # Delivered twice: still one interaction, one invitation.
    await publish(broker, "cx.interactions.v1", (str(customer).encode(), orjson.dumps(hand_written)))

    async def invited() -> Any:
        items = (await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]
        return items or None

    (invitation,) = await wait_for(invited, 15)
    assert invitation["customer_id"] == str(customer) and invitation["origin"] == "trigger"
    reasons = await dead_letters(broker, "cx.interactions.v1", f"{consumers.consumer_group}.interactions", 2)
    assert "invalid interaction.recorded data" in reasons[malformed] and "customer_id or customer_email" in reasons[malformed]
    assert reasons[with_nul] == "invalid interaction.recorded event: data.metadata.note: text must not contain NUL characters"
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert [(h["type"], h["channel"], h["amount"]) for h in view["touchpoint_history"]] == [(kind, "store", "42.50")]


async def test_crm_merge_erasure_and_completed_task_arrive_through_the_broker(
    client: httpx.AsyncClient, make: Any, broker: DevBroker, consumers: CEMSettings, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    survivor, duplicate, leaving = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await publish(
        broker,
        "crm.customers.v1",
        *[crm_event("customer.created", CustomerCreated(**snapshot(c)), c) for c in (survivor, duplicate, leaving)],
    )
    await wait_for(lambda: _known(client, leaving), 15)
    await make.answer(survey["id"], {"nps": 2}, customer_id=str(duplicate))
    await make.answer(survey["id"], {"nps": 9}, customer_id=str(leaving), email=None)
    async with session_factory() as session:
        followup = (await session.scalars(select(Followup))).one()
    merge = CustomerMerged(survivor_id=survivor, duplicate_id=duplicate, survivor=CustomerSnapshot(**snapshot(survivor, 2)))
    done = TaskCompleted(
        task_id=uuid.uuid4(),
        customer_id=duplicate,
        origin="followup",
        origin_ref=str(followup.id),
        completed_at=dt.datetime.now(dt.UTC),
    )
    await publish(
        broker,
        "crm.customers.v1",
        crm_event("customer.merged", merge, survivor),
        crm_event("task.completed", done, survivor),
        crm_event("customer.erased", CustomerErased(customer_id=leaving, erased_at=dt.datetime.now(dt.UTC)), leaving),
    )

    async def settled() -> Any:
        view = (await client.get(f"/v1/customers/{survivor}/experience")).json()
        gone = (await client.get(f"/v1/customers/{leaving}/experience")).json()
        followups = view["followups"]  # empty until the follow-up request is applied: keep waiting
        ready = view["summary"]["responses"] == 1 and bool(followups) and followups[0]["status"] == "closed"
        return view if ready and gone["customer"]["email"] is None else None

    view = await wait_for(settled, 15)
    assert view["followups"][0]["task_id"] == str(done.task_id)
    assert (await client.get(f"/v1/customers/{duplicate}/experience")).status_code == 308
    recovery = (await client.get("/v1/analytics/recovery")).json()
    assert (recovery["detractors"], recovery["followed_up"]) == (1, 1)


async def _known(client: httpx.AsyncClient, customer: uuid.UUID) -> bool:
    return (await client.get(f"/v1/customers/{customer}/experience")).status_code == 200
