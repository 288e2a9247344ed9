"""The CEM's `cx.interactions.v1` consumer applies whole polls with a few statements: an event
repeated inside one poll or redelivered in a later one is stored, and judged by the survey
triggers, once; merged and erased customers are resolved as for a single event."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from aiokafka import ConsumerRecord, TopicPartition
from fastapi import FastAPI
from sqlalchemy import func, select

from cem.config import CEMSettings
from cem.db import ProcessedEvent
from cem.invitations.models import Invitation
from cem.main import build_consumers
from cem.suppressions.models import Suppression
from cem.touchpoints.models import TouchpointInteraction
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import CustomerErased, CustomerMerged, CustomerSnapshot, InteractionRecorded
from cxkit.kafka.consumer import EventConsumer

from .conftest import delivery, snapshot

TOPIC = "cx.interactions.v1"
TRIGGER = {"interaction_type": "purchase", "touchpoint": "checkout", "delay_minutes": 0, "throttle_days": 30}


def recorded(customer_id: uuid.UUID, *, event_id: str, **data: Any) -> bytes:
    payload = InteractionRecorded(
        **{
            "customer_id": customer_id,
            "type": "purchase",
            "touchpoint": "checkout",
            "occurred_at": dt.datetime.now(dt.UTC),
            **data,
        }
    )
    event = new_event("interaction.recorded", source="urn:pos:store-7", subject=str(customer_id), data=payload)
    event.id = event_id
    return encode_event(event)


def poll(*values: bytes, first_offset: int = 0) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    records = [
        ConsumerRecord(TOPIC, 0, first_offset + i, 0, 0, b"k", value, None, 1, len(value), ()) for i, value in enumerate(values)
    ]
    return {TopicPartition(TOPIC, 0): records}


def interactions_consumer(app: FastAPI, settings: CEMSettings) -> EventConsumer:
    settings = settings.model_copy(update={"consumer_group": f"cem-test-{uuid.uuid4().hex[:8]}"})
    consumers = {c.name: c for c in build_consumers(settings, app.state.customer_data)(app.state.session_factory)}
    return consumers[f"{settings.consumer_group}.interactions"]


async def count(session_factory: Any, model: Any, *where: Any) -> int:
    async with session_factory() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_a_repeated_or_redelivered_event_is_stored_and_judged_once(
    client: httpx.AsyncClient, make: Any, cem_app: FastAPI, cem_settings: CEMSettings, session_factory: Any
) -> None:
    await make.touchpoint("checkout")
    await make.survey("nps", touchpoint="checkout", trigger=TRIGGER)
    consumer = interactions_consumer(cem_app, cem_settings)
    ada, bob = await make.customer(), await make.customer()
    first = recorded(ada, event_id="evt-1", summary="Order 1")
    second = recorded(ada, event_id="evt-2", summary="Order 2")  # throttled: Ada was just invited

    await consumer.process(poll(first, first, second, recorded(bob, event_id="evt-3")))
    await consumer.process(poll(second, first, recorded(bob, event_id="evt-3"), first_offset=4))

    assert await count(session_factory, TouchpointInteraction) == 3
    assert await count(session_factory, ProcessedEvent, ProcessedEvent.consumer == consumer.name) == 3
    assert await count(session_factory, Invitation) == 2  # Ada once, Bob once
    assert await count(session_factory, Suppression, Suppression.reason == "survey_throttle") == 1
    history = (await client.get(f"/v1/customers/{ada}/experience")).json()["touchpoint_history"]
    assert sorted(h["summary"] for h in history) == ["Order 1", "Order 2"]


async def test_a_poll_resolves_merged_duplicates_to_their_survivor_and_keeps_no_personal_data_of_the_erased(
    make: Any, apply: Any, cem_app: FastAPI, cem_settings: CEMSettings, session_factory: Any
) -> None:
    survivor, duplicate, erased = await make.customer(), await make.customer(), await make.customer()
    await apply(
        delivery(
            "customer.merged",
            CustomerMerged(survivor_id=survivor, duplicate_id=duplicate, survivor=CustomerSnapshot(**snapshot(survivor, 2))),
        ),
        delivery("customer.erased", CustomerErased(customer_id=erased, erased_at=dt.datetime.now(dt.UTC))),
    )
    consumer = interactions_consumer(cem_app, cem_settings)
    await consumer.process(
        poll(
            recorded(duplicate, event_id="m-1", summary="to the survivor"),
            recorded(erased, event_id="e-1", summary="secret", metadata={"card": "4111"}),
        )
    )
    async with session_factory() as session:
        rows = (await session.scalars(select(TouchpointInteraction))).all()
    stored = {r.customer_id: r for r in rows}
    assert set(stored) == {survivor, erased}
    assert stored[survivor].summary == "to the survivor"
    assert stored[erased].summary is None and stored[erased].details == {}


async def test_a_poll_gives_its_interactions_new_time_ordered_ids_in_event_order(
    make: Any, cem_app: FastAPI, cem_settings: CEMSettings, session_factory: Any
) -> None:
    """Each stored row gets a new version 7 id (`cxkit.ids`), increasing in the poll's event
    order, so a poll's rows go in at the right edge of the primary key (a random id put each on
    a page of its own)."""
    ada = await make.customer()
    consumer = interactions_consumer(cem_app, cem_settings)
    events = [f"ordered-{n}" for n in range(40)]
    await consumer.process(poll(*(recorded(ada, event_id=e, summary=e) for e in events)))
    async with session_factory() as session:
        rows = (await session.execute(select(TouchpointInteraction.summary, TouchpointInteraction.id))).all()
    ids = dict(rows)
    assert set(ids) == set(events)
    in_event_order = [ids[e] for e in events]
    assert all(i.version == 7 for i in in_event_order)
    assert in_event_order == sorted(in_event_order) and len(set(in_event_order)) == len(events)
