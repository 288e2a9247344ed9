"""A write about a customer racing that customer's erasure or merge: feedback (`POST /v1/feedback`)
and interactions (`cx.interactions.v1`) hold the customer's profile row while they write, and the
erasure or merge locks it before it changes the customer's rows, so one waits for the other and
the later one sees what the earlier did. Each test holds one side's transaction open until the
other waits on the lock (`pg_stat_activity`), then commits it."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cem.config import CEMSettings
from cem.consumers import crm_customers, interactions
from cem.feedback.models import Feedback
from cem.suppressions.models import Suppression
from cem.touchpoints.models import TouchpointInteraction
from cxkit.events.payloads import CustomerErased, CustomerMerged, CustomerSnapshot
from cxkit.kafka.consumer import Delivery

from .conftest import delivery, interaction, snapshot

Handler = Callable[[Any, list[Delivery]], Awaitable[None]]


def erased(customer_id: uuid.UUID) -> Delivery:
    return delivery("customer.erased", CustomerErased(customer_id=customer_id, erased_at=dt.datetime.now(dt.UTC)))


def merged(survivor: uuid.UUID, duplicate: uuid.UUID) -> Delivery:
    survivor_snapshot = CustomerSnapshot(**snapshot(survivor, 2))
    return delivery("customer.merged", CustomerMerged(survivor_id=survivor, duplicate_id=duplicate, survivor=survivor_snapshot))


async def waits_on_a_lock(database_url: str, other: asyncio.Task[Any]) -> bool:
    """Whether a session of the database comes to wait on a lock before `other` ends (or 10 s pass)."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline and not other.done():
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                return True
            await asyncio.sleep(0.02)
        return False
    finally:
        await conn.close()


async def while_held(
    session_factory: Any, database_url: str, handler: Handler, event: Delivery, other: Callable[[], Awaitable[Any]]
) -> tuple[bool, Any]:
    """Apply `event` with `handler` in a transaction kept open until `other` (started then) waits
    on a lock, or ends; commit; return (whether it waited, what it returned)."""
    async with session_factory() as session, session.begin():
        await handler(session, [event])
        task = asyncio.ensure_future(other())
        waited = await waits_on_a_lock(database_url, task)
    return waited, await asyncio.wait_for(task, 30)


@pytest.fixture
def customer_handlers(cem_app: FastAPI) -> dict[str, Handler]:
    return crm_customers.live_handlers(cem_app.state.customer_data)


@pytest.fixture
def interaction_handler(cem_settings: CEMSettings) -> Handler:
    return interactions.live_handlers(cem_settings)["interaction.recorded"]


async def stored(session_factory: Any, model: Any) -> list[Any]:
    async with session_factory() as session:
        return list((await session.scalars(select(model))).all())


async def test_feedback_racing_the_erasure_of_its_customer_is_stored_without_its_text(
    client: httpx.AsyncClient,
    make: Any,
    session_factory: Any,
    cem_database_url: str,
    customer_handlers: dict[str, Handler],
    outbox: Any,
) -> None:
    customer = await make.customer()

    async def give_feedback() -> httpx.Response:
        return await client.post("/v1/feedback", json={"customer_id": str(customer), "channel": "chat", "text": "Private"})

    waited, r = await while_held(
        session_factory, cem_database_url, customer_handlers["customer.erased"], erased(customer), give_feedback
    )
    assert r.status_code == 201, r.text
    assert (r.json()["customer_id"], r.json()["text"]) == (str(customer), None)
    ((feedback,),) = [await stored(session_factory, Feedback)]
    assert feedback.text is None
    assert [e["data"]["text"] for e in await outbox("feedback.received")] == [None]
    assert waited


async def test_feedback_racing_the_merge_of_its_customer_goes_to_the_survivor(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_database_url: str, customer_handlers: dict[str, Handler]
) -> None:
    survivor, duplicate = await make.customer(), await make.customer()

    async def give_feedback() -> httpx.Response:
        return await client.post("/v1/feedback", json={"customer_id": str(duplicate), "channel": "chat", "text": "Hello"})

    event = merged(survivor, duplicate)
    waited, r = await while_held(session_factory, cem_database_url, customer_handlers["customer.merged"], event, give_feedback)
    assert r.status_code == 201, r.text
    assert r.json()["customer_id"] == str(survivor)
    assert [f.customer_id for f in await stored(session_factory, Feedback)] == [survivor]
    assert waited


async def test_an_interaction_racing_the_erasure_of_its_customer_keeps_no_personal_data_and_invites_nobody(
    make: Any,
    apply: Any,
    session_factory: Any,
    cem_database_url: str,
    customer_handlers: dict[str, Handler],
) -> None:
    await make.touchpoint("checkout")
    await make.survey("nps", touchpoint="checkout", trigger={"interaction_type": "purchase"})
    customer = await make.customer()

    waited, _ = await while_held(
        session_factory,
        cem_database_url,
        customer_handlers["customer.erased"],
        erased(customer),
        lambda: apply(interaction(customer, summary="Private", metadata={"note": "private"})),
    )
    (row,) = await stored(session_factory, TouchpointInteraction)
    assert (row.customer_id, row.summary, row.details) == (customer, None, {})
    assert [s.reason for s in await stored(session_factory, Suppression)] == ["erased"]
    assert waited


async def test_an_interaction_racing_the_merge_of_its_customer_goes_to_the_survivor(
    make: Any, apply: Any, session_factory: Any, cem_database_url: str, customer_handlers: dict[str, Handler]
) -> None:
    survivor, duplicate = await make.customer(), await make.customer()
    waited, _ = await while_held(
        session_factory,
        cem_database_url,
        customer_handlers["customer.merged"],
        merged(survivor, duplicate),
        lambda: apply(interaction(duplicate)),
    )
    assert [i.customer_id for i in await stored(session_factory, TouchpointInteraction)] == [survivor]
    assert waited


@pytest.mark.parametrize("change", ["erased", "merged"])
async def test_an_erasure_or_merge_racing_an_interaction_written_first_waits_and_reaches_it(
    make: Any, apply: Any, session_factory: Any, cem_database_url: str, interaction_handler: Handler, change: str
) -> None:
    survivor, customer = await make.customer(), await make.customer()
    event = erased(customer) if change == "erased" else merged(survivor, customer)
    waited, _ = await while_held(
        session_factory, cem_database_url, interaction_handler, interaction(customer, summary="Private"), lambda: apply(event)
    )
    (row,) = await stored(session_factory, TouchpointInteraction)
    if change == "erased":
        assert (row.customer_id, row.summary) == (customer, None)
    else:
        assert (row.customer_id, row.summary) == (survivor, "Private")
    assert waited
