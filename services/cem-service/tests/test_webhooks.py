"""/v1/webhooks on the CEM: the same kit routes over the CEM's tables and event types; with the
relay and the delivery worker running in-process, a feedback reaches a receiver that verifies
its signature."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from cem.config import CEMSettings
from cem.main import create_app
from cxkit.testing import bearer
from cxkit.webhooks.testing import WebhookReceiver


async def test_cem_webhooks_take_the_cem_event_types_and_refuse_loopback(client: httpx.AsyncClient) -> None:
    crm_type = await client.post("/v1/webhooks", json={"url": "https://93.184.216.34/", "event_types": ["customer.created"]})
    assert crm_type.status_code == 422 and "feedback.received" in crm_type.json()["detail"]
    loopback = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/"})
    assert loopback.status_code == 422 and "private" in loopback.json()["detail"]
    ok = await client.post("/v1/webhooks", json={"url": "https://93.184.216.34/", "event_types": ["followup.requested"]})
    assert ok.status_code == 201 and ok.json()["secret"].startswith("whsec_")


@pytest.fixture
async def delivering_app(cem_settings: CEMSettings, client: httpx.AsyncClient) -> AsyncIterator[FastAPI]:
    """The CEM with its relay and webhook worker running; `client` empties the tables afterwards."""
    settings = cem_settings.model_copy(
        update={"run_relay": True, "run_webhook_worker": True, "webhook_allow_private_targets": True}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_feedback_is_delivered_signed_to_a_subscriber(delivering_app: FastAPI, keys: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=delivering_app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://cem", headers=bearer(keys["admin"])) as api,
        WebhookReceiver() as receiver,
    ):
        hook = (await api.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["feedback.received"]})).json()
        receiver.secret = hook["secret"]
        feedback = await api.post("/v1/feedback", json={"channel": "chat", "text": "Great service, thank you", "rating": 5})
        assert feedback.status_code == 201, feedback.text
        [got] = await receiver.wait_for(1)
        await asyncio.sleep(0.2)
    assert got.event["type"] == "feedback.received" and got.event["data"]["feedback_id"] == feedback.json()["id"]
    assert receiver.bad_signatures == 0 and len(receiver.received) == 1
