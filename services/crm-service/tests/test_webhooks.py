"""/v1/webhooks on the CRM: the subscriptions API (admin only, secret shown once, SSRF guard),
and end to end with the relay and the delivery worker running in-process on the real database
and broker: a receiver that verifies every signature is down for 30 s, then up, and gets every
event once, each customer's in order."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crm.config import CRMSettings
from crm.main import create_app
from cxkit.testing import bearer
from cxkit.webhooks.testing import WebhookReceiver

# The outage the issue asks for; a shorter one can be set for a quick local run.
OUTAGE_S = float(os.environ.get("CX_WEBHOOK_OUTAGE_SECONDS", "30"))


async def test_subscribing_shows_the_secret_once_and_needs_admin(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    body = {"url": "https://93.184.216.34/hooks", "event_types": ["customer.created"], "description": "billing"}
    assert (await client.post("/v1/webhooks", json=body, headers=bearer(keys["write"]))).status_code == 403
    created = await client.post("/v1/webhooks", json=body)
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and hook["enabled"] is True
    assert created.headers["Location"] == f"/v1/webhooks/{hook['id']}" and created.headers["ETag"] == '"1"'
    read = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert "secret" not in read and read["event_types"] == ["customer.created"]
    listed = (await client.get("/v1/webhooks")).json()
    assert [h["id"] for h in listed["items"]] == [hook["id"]] and "secret" not in listed["items"][0]

    stale = await client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    off = await client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False}, headers={"If-Match": '"1"'})
    assert (off.status_code, off.json()["enabled"], off.json()["disabled_reason"]) == (200, False, "disabled by request")
    rotated = (await client.post(f"/v1/webhooks/{hook['id']}/secret")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]
    # The replaced secret signs beside the new one for a day unless told otherwise (0: at once).
    kept_until = dt.datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert abs((kept_until - dt.datetime.now(dt.UTC)).total_seconds() - 86_400) < 60
    assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["previous_secret_expires_at"] == rotated[
        "previous_secret_expires_at"
    ]
    at_once = await client.post(f"/v1/webhooks/{hook['id']}/secret", json={"previous_secret_expires_in_seconds": 0})
    assert at_once.status_code == 200 and at_once.json()["previous_secret_expires_at"] is None
    for bad in (-1, 7 * 86_400 + 1, "soon"):
        refused = await client.post(f"/v1/webhooks/{hook['id']}/secret", json={"previous_secret_expires_in_seconds": bad})
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["loc"] == ["body", "previous_secret_expires_in_seconds"], refused.text
    assert (await client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json() == {"items": [], "next_cursor": None}
    while_disabled = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/retry")
    assert while_disabled.status_code == 409  # disabled: enable it first
    assert (await client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
    gone = await client.get(f"/v1/webhooks/{hook['id']}/deliveries")
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "http://127.0.0.1:9000/hook"}, "private"),
        ({"url": "http://10.0.0.8/hook"}, "private"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "private"),
        ({"url": "http://[::1]:8080/"}, "private"),
        ({"url": "http://localhost:8080/"}, "private"),
        ({"url": "file:///etc/passwd"}, "should match pattern"),
        ({"url": "http://[::1/"}, "not valid"),
        ({"url": "https://93.184.216.34/", "event_types": ["survey.invited"]}, "unknown event types survey.invited"),
        ({"url": "https://93.184.216.34/", "secret": "mine"}, "extra"),
    ],
)
async def test_bad_subscriptions_are_422(client: httpx.AsyncClient, body: dict[str, Any], needle: str) -> None:
    """Private and loopback targets are refused unless the service allows them (it does not here)."""
    response = await client.post("/v1/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.text.lower() or needle in response.text
    if needle != "extra":  # the field at fault is named, as for any invalid field
        assert response.json()["errors"][0]["loc"][:2] == ["body", "event_types" if "event types" in needle else "url"]
        assert response.json()["detail"].startswith(f"body.{response.json()['errors'][0]['loc'][1]}")


async def test_a_patch_refuses_null_where_the_document_has_none_and_clears_the_description(client: httpx.AsyncClient) -> None:
    """`url`, `event_types` and `enabled` always have a value: null for one is a 422 problem and
    changes nothing, and the OpenAPI document shows them without a null branch (a schema-valid
    PATCH is not refused); `description` may be null, which clears it."""
    body = {"url": "https://93.184.216.34/hooks", "event_types": ["customer.created"], "description": "billing"}
    hook = (await client.post("/v1/webhooks", json=body)).json()
    for field in ("url", "event_types", "enabled"):
        refused = await client.patch(f"/v1/webhooks/{hook['id']}", json={field: None})
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json", refused.text
        assert field in refused.json()["detail"] and "cannot be null" in refused.json()["detail"]
    unchanged = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert (unchanged["version"], unchanged["url"], unchanged["event_types"], unchanged["enabled"]) == (
        1,
        body["url"],
        body["event_types"],
        True,
    )
    cleared = await client.patch(f"/v1/webhooks/{hook['id']}", json={"description": None})
    assert cleared.status_code == 200 and cleared.json()["description"] is None and cleared.json()["version"] == 2

    document = (await client.get("/openapi.json")).json()
    props = document["components"]["schemas"]["WebhookUpdate"]["properties"]
    for field in ("url", "event_types", "enabled"):
        assert props[field].get("type") and "anyOf" not in props[field] and "default" not in props[field], props[field]
    assert {"type": "null"} in props["description"]["anyOf"]


@pytest.fixture
async def delivering_app(crm_settings: CRMSettings, client: httpx.AsyncClient) -> AsyncIterator[FastAPI]:
    """The CRM with its relay and webhook worker running (loopback targets allowed, retries a
    second or two apart); `client` empties the tables once it has stopped."""
    settings = crm_settings.model_copy(
        update={
            "run_relay": True,
            "run_webhook_worker": True,
            "webhook_allow_private_targets": True,
            "webhook_retry_base_seconds": 0.25,
            "webhook_retry_max_seconds": 2.0,
            "webhook_timeout_seconds": 2.0,
            "webhook_poll_interval_ms": 100,
            "webhook_failures_before_disable": 1000,  # the 30 s outage makes ~60 failed attempts
        }
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_a_receiver_down_for_30_s_then_up_gets_every_event_once_in_order(
    delivering_app: FastAPI, keys: dict[str, str], events: Any
) -> None:
    transport = httpx.ASGITransport(app=delivering_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crm", headers=bearer(keys["admin"])) as api:
        receiver = WebhookReceiver()
        await receiver.start()
        url = receiver.url
        await receiver.stop()  # down: its port refuses connections
        hook = (await api.post("/v1/webhooks", json={"url": url})).json()
        receiver.secret = hook["secret"]
        customers = []
        for n in range(3):
            created = await api.post("/v1/customers", json={"email": f"w{n}-{uuid.uuid4().hex[:8]}@example.com", "name": "A"})
            customers.append(created.json())
        for version in (2, 3):
            for customer in customers:
                changed = await api.patch(f"/v1/customers/{customer['id']}", json={"name": f"name v{version}"})
                assert changed.status_code == 200, changed.text
        await asyncio.sleep(OUTAGE_S)
        log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "pending"})).json()["items"]
        assert len(log) == 9 and any(d["attempts"] >= 3 for d in log)
        tried = next(d for d in log if d["attempts"])
        assert tried["next_attempt_at"] and tried["last_status_code"] is None and tried["last_error"]
        assert all(a["status_code"] is None for a in tried["attempt_log"])

        await receiver.start()  # up again, on the same port
        try:
            got = await receiver.wait_for(9, timeout=20)
            await asyncio.sleep(0.5)
        finally:
            await receiver.stop()
    assert receiver.bad_signatures == 0
    assert len(receiver.received) == 9  # each event once: nothing sent twice after the receiver took it
    outbox = await events()
    by_key: dict[str, list[str]] = {}
    for event in outbox:
        by_key.setdefault(event["_key"], []).append(event["id"])
    received_by_key: dict[str, list[str]] = {}
    for r in got:
        received_by_key.setdefault(r.event["subject"], []).append(r.webhook_id)
    assert received_by_key == by_key  # every event, each customer's in outbox order
    assert [r.body for r in got if r.event["type"] == "customer.created"]  # the CloudEvent as on Kafka
    for _ in range(100):
        delivered = await _deliveries(delivering_app, keys, hook["id"])
        if {d["status"] for d in delivered} == {"succeeded"}:
            break
        await asyncio.sleep(0.05)
    assert {d["status"] for d in delivered} == {"succeeded"} and len(delivered) == 9
    assert all(d["attempt_log"][-1]["status_code"] == 200 for d in delivered)


async def _finished(api: httpx.AsyncClient, hook_id: str) -> dict[str, Any]:
    """The subscription's one delivery, once the worker recorded its outcome."""
    for _ in range(100):
        [delivery] = (await api.get(f"/v1/webhooks/{hook_id}/deliveries")).json()["items"]
        if delivery["status"] != "pending":
            return delivery  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"still pending: {delivery}")


async def _deliveries(app: FastAPI, keys: dict[str, str], hook_id: str) -> list[dict[str, Any]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crm", headers=bearer(keys["admin"])) as api:
        items: list[dict[str, Any]] = (await api.get(f"/v1/webhooks/{hook_id}/deliveries")).json()["items"]
    return items


@contextlib.asynccontextmanager
async def subscribed(
    app: FastAPI, keys: dict[str, str], event_types: list[str]
) -> AsyncIterator[tuple[httpx.AsyncClient, WebhookReceiver, dict[str, Any]]]:
    """An admin client of `app`, a receiver verifying with the secret, and its subscription."""
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://crm", headers=bearer(keys["admin"])) as api,
        WebhookReceiver() as receiver,
    ):
        hook = (await api.post("/v1/webhooks", json={"url": receiver.url, "event_types": event_types})).json()
        receiver.secret = hook["secret"]
        yield api, receiver, hook


async def test_a_delivery_can_be_sent_again_with_the_same_webhook_id(delivering_app: FastAPI, keys: dict[str, str]) -> None:
    async with subscribed(delivering_app, keys, ["customer.created"]) as (api, receiver, hook):
        customer = (await api.post("/v1/customers", json={"email": f"r-{uuid.uuid4().hex[:8]}@example.com", "name": "R"})).json()
        await api.patch(f"/v1/customers/{customer['id']}", json={"name": "not subscribed to"})
        [first] = await receiver.wait_for(1)
        delivery = await _finished(api, hook["id"])
        assert (delivery["status"], delivery["webhook_id"], delivery["event_type"]) == (
            "succeeded",
            first.webhook_id,
            "customer.created",
        )
        again = await api.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry")
        assert again.status_code == 202 and again.json()["status"] == "pending"
        for _ in range(100):
            if len(receiver.received) == 2:
                break
            await asyncio.sleep(0.05)
    assert [r.webhook_id for r in receiver.received] == [first.webhook_id] * 2
    assert first.event["subject"] == customer["id"]


async def test_a_ping_reaches_the_receiver_signed_whatever_the_event_types(delivering_app: FastAPI, keys: dict[str, str]) -> None:
    async with subscribed(delivering_app, keys, ["deal.stage_changed"]) as (api, receiver, hook):
        url = f"/v1/webhooks/{hook['id']}/ping"
        assert (await api.post(url, headers=bearer(keys["write"]))).status_code == 403
        queued = await api.post(url, headers={"Idempotency-Key": "ping-1"})
        assert queued.status_code == 202, queued.text
        assert (queued.json()["event_type"], queued.json()["status"]) == ("webhook.ping", "pending")
        [got] = await receiver.wait_for(1)
        assert got.webhook_id == queued.json()["webhook_id"] and got.event["type"] == "webhook.ping"
        assert got.event["source"] == "urn:cx:crm-service" and got.event["data"]["webhook"] == hook["id"]
        assert receiver.bad_signatures == 0
        done = await _finished(api, hook["id"])
        assert (done["id"], done["status"], done["attempts"]) == (queued.json()["id"], "succeeded", 1)
        replayed = await api.post(url, headers={"Idempotency-Key": "ping-1"})  # the same answer, no second ping
        assert replayed.json()["id"] == queued.json()["id"]

        assert (await api.post(f"/v1/webhooks/{uuid.uuid4()}/ping")).status_code == 404
        assert (await api.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False})).status_code == 200
        disabled = await api.post(url)
        assert disabled.status_code == 409 and disabled.headers["content-type"] == "application/problem+json"
    assert len(receiver.received) == 1
