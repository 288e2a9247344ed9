"""An outside system publishes onto cx.interactions.v1 with a plain aiokafka producer and a
hand-written CloudEvent (none of this project's code); both services apply it. So they do when
it publishes with a librdkafka client (confluent-kafka, kcat). A malformed message goes to the
DLQ with its reason, and consumption goes on."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import uuid
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cxkit.dev_broker import DevBroker
from cxkit.testing import wait_for

pytestmark = pytest.mark.e2e
TOPIC = "cx.interactions.v1"


async def publish(bootstrap: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, value=value, key=key, headers=[("content-type", b"application/cloudevents+json")])
    finally:
        await producer.stop()


def wheel_librdkafka() -> str:
    """The librdkafka that the confluent-kafka wheel bundles (2.16): the one to run kcat with,
    as Debian 12's (2.0.2) cannot read the dev broker's ApiVersions answer."""
    import confluent_kafka

    libs = glob.glob(str(Path(confluent_kafka.__file__).parents[1] / "confluent_kafka.libs" / "librdkafka*.so*"))
    assert libs, "the confluent-kafka wheel ships no librdkafka"
    return libs[0]


async def publish_with_confluent_kafka(bootstrap: str, key: bytes, value: bytes) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    outcome: list[Any] = []
    producer.produce(
        TOPIC,
        value=value,
        key=key,
        headers=[("content-type", b"application/cloudevents+json")],
        on_delivery=lambda e, m: outcome.append(e),
    )
    assert await asyncio.to_thread(producer.flush, 20) == 0, "not delivered within 20 s"
    assert outcome == [None], outcome


async def publish_with_kcat(bootstrap: str, key: bytes, value: bytes) -> None:
    cmd = ["kcat", "-P", "-b", bootstrap, "-t", TOPIC, "-k", key.decode(), "-H", "content-type=application/cloudevents+json"]
    env = {**os.environ, "LD_PRELOAD": wheel_librdkafka()}
    done = await asyncio.to_thread(subprocess.run, cmd, input=value, env=env, capture_output=True, timeout=30)
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()


def purchase(email: str) -> dict[str, Any]:
    """A till's purchase as the outside system writes it: a CloudEvent naming the customer by email."""
    return {
        "specversion": "1.0",
        "id": f"pos-{uuid.uuid4()}",
        "source": "urn:pos:store-17",
        "type": "interaction.recorded",
        "subject": email,
        "time": "2026-11-23T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "customer_email": email,
            "type": "purchase",
            "channel": "store",
            "touchpoint": "checkout",
            "occurred_at": "2026-11-23T09:59:00Z",
            "summary": "Till 3",
            "amount": 42.5,
            "currency": "EUR",
        },
    }


async def customer_by_email(crm: httpx.AsyncClient, email: str) -> dict[str, Any] | None:
    items = (await crm.get("/v1/customers", params={"q": email})).json()["items"]
    return items[0] if items else None


async def test_a_point_of_sale_purchase_reaches_both_services_whoever_publishes_it(stack_factory: Any, broker: DevBroker) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    email = f"walk-in-{uuid.uuid4().hex[:8]}@example.com"
    event = purchase(email)
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        await publish(broker.bootstrap, email.encode(), json.dumps(event).encode())

        customer = await wait_for(lambda: customer_by_email(crm, email), timeout=20)
        assert customer["lifecycle_stage"] == "lead"  # an unknown email makes a lead-stage customer
        interactions = (await crm.get("/v1/interactions", params={"customer_id": customer["id"]})).json()["items"]
        assert [(i["type"], i["touchpoint"], i["summary"]) for i in interactions] == [("purchase", "checkout", "Till 3")]

        async def cem_history() -> Any:
            r = await cem.get(f"/v1/customers/{customer['id']}/experience")
            return r.status_code == 200 and r.json()["touchpoint_history"]

        history = await wait_for(cem_history, timeout=20)
        assert [(h["type"], h["touchpoint"], h["channel"]) for h in history] == [("purchase", "checkout", "store")]

        # The same event published again changes nothing on either side.
        await publish(broker.bootstrap, email.encode(), json.dumps(event).encode())
        marker = f"marker-{uuid.uuid4().hex[:8]}@example.com"
        await publish(
            broker.bootstrap,
            marker.encode(),
            json.dumps({**event, "id": f"pos-{uuid.uuid4()}", "data": {**event["data"], "customer_email": marker}}).encode(),
        )
        marked = await wait_for(lambda: customer_by_email(crm, marker), timeout=20)
        await wait_for(lambda: _cem_knows(cem, marked["id"]), timeout=20)
        assert len((await crm.get("/v1/interactions", params={"customer_id": customer["id"]})).json()["items"]) == 1
        assert len((await cem.get(f"/v1/customers/{customer['id']}/experience")).json()["touchpoint_history"]) == 1

        # librdkafka clients (what most integrators use) publish the same way.
        await librdkafka_clients_publish_purchases_both_services_apply(broker.bootstrap, crm, cem)


async def librdkafka_clients_publish_purchases_both_services_apply(
    bootstrap: str, crm: httpx.AsyncClient, cem: httpx.AsyncClient
) -> None:
    """confluent-kafka always; kcat (run on the wheel's librdkafka) where it is installed."""
    publishers = {"confluent-kafka": publish_with_confluent_kafka}
    if shutil.which("kcat"):
        publishers["kcat"] = publish_with_kcat
    else:
        warnings.warn("kcat is not installed (Debian package kcat; scripts/ensure_test_deps.sh installs it)", stacklevel=1)
    emails = {client: f"{client}-{uuid.uuid4().hex[:8]}@example.com" for client in publishers}
    for client, publish_as in publishers.items():
        await publish_as(bootstrap, emails[client].encode(), json.dumps(purchase(emails[client])).encode())
    for client, email in emails.items():
        customer = await wait_for(lambda email=email: customer_by_email(crm, email), timeout=20)
        interactions = (await crm.get("/v1/interactions", params={"customer_id": customer["id"]})).json()["items"]
        assert [(i["type"], i["touchpoint"], i["amount"]) for i in interactions] == [("purchase", "checkout", "42.50")], client
        assert await wait_for(lambda customer=customer: _cem_knows(cem, customer["id"]), timeout=20), client


async def _cem_knows(cem: httpx.AsyncClient, customer_id: str) -> bool:
    r = await cem.get(f"/v1/customers/{customer_id}/experience")
    return r.status_code == 200 and bool(r.json()["touchpoint_history"])


async def test_a_malformed_outside_message_goes_to_the_dlq_with_its_reason_and_the_next_one_applies(
    stack_factory: Any, broker: DevBroker
) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    bad_key = f"bad-{uuid.uuid4().hex[:8]}".encode()
    bad = json.dumps(
        {
            "specversion": "1.0",
            "id": "x",
            "source": "urn:pos",
            "type": "interaction.recorded",
            "data": {"type": "purchase", "occurred_at": "2026-11-23T09:00:00Z"},
        }
    ).encode()
    email = f"after-bad-{uuid.uuid4().hex[:8]}@example.com"
    good = {
        "specversion": "1.0",
        "id": f"pos-{uuid.uuid4()}",
        "source": "urn:pos:store-2",
        "type": "interaction.recorded",
        "data": {"customer_email": email, "type": "call", "occurred_at": "2026-11-23T09:00:00Z"},
    }
    async with stack.crm_client() as crm:
        await publish(broker.bootstrap, bad_key, bad)
        await publish(broker.bootstrap, email.encode(), json.dumps(good).encode())
        await wait_for(lambda: customer_by_email(crm, email), timeout=20)

    reasons: dict[str, str] = {}
    dlq = AIOKafkaConsumer(
        f"{TOPIC}.dlq", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", group_id=f"dlq-{uuid.uuid4().hex[:6]}"
    )
    await dlq.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(reasons) < 2 and loop.time() < deadline:
            for records in (await dlq.getmany(timeout_ms=500)).values():
                for rec in records:
                    if rec.key == bad_key and rec.value == bad:
                        headers = dict(rec.headers)
                        reasons[headers["dlq.consumer"].decode()] = headers["dlq.reason"].decode()
    finally:
        await dlq.stop()
    assert set(reasons) == {f"{stack.group('CRM')}.interactions", f"{stack.group('CEM')}.interactions"}
    for reason in reasons.values():
        assert "invalid interaction.recorded data" in reason and "customer_id or customer_email" in reason
