"""Interactions over HTTP (published through the outbox) and from `cx.interactions.v1` on the
real broker (batched, idempotent, bad events to the DLQ)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select

from crm.config import CRMSettings
from crm.customers.models import Customer
from crm.db import SOURCE
from crm.interactions.models import Interaction
from crm.interactions.service import apply_interaction_events
from crm.main import build_consumers
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import InteractionRecorded
from cxkit.kafka.client import ensure_topics
from cxkit.kafka.consumer import Delivery
from cxkit.testing import wait_for

from .customer_races import erase, merge, sent_during

TOPIC = "cx.interactions.v1"

# --- HTTP ----------------------------------------------------------------------------------


async def test_an_unknown_email_makes_a_lead_customer_and_both_are_announced(client: httpx.AsyncClient, events: Any) -> None:
    r = await client.post(
        "/v1/interactions",
        json={
            "customer_email": "New.Buyer@Example.com",
            "type": "purchase",
            "amount": "19.90",
            "currency": "EUR",
            "touchpoint": "checkout",
        },
    )
    assert r.status_code == 201, r.text
    interaction = r.json()
    customer = (await client.get(f"/v1/customers/{interaction['customer_id']}")).json()
    assert customer["lifecycle_stage"] == "lead" and customer["email"].lower() == "new.buyer@example.com"
    assert customer["source"] == "api"
    [created] = await events("customer.created")
    assert created["subject"] == customer["id"]
    [recorded] = await events("interaction.recorded")
    assert recorded["_topic"] == TOPIC and recorded["_key"] == customer["id"] and recorded["source"] == SOURCE
    assert recorded["data"]["interaction_id"] == interaction["id"] and recorded["data"]["customer_id"] == customer["id"]
    assert recorded["data"]["amount"] == "19.90" and recorded["data"]["touchpoint"] == "checkout"

    again = await client.post("/v1/interactions", json={"customer_email": "new.buyer@EXAMPLE.com", "type": "call"})
    assert again.json()["customer_id"] == customer["id"]
    assert len(await events("customer.created")) == 1


async def test_concurrent_interactions_for_one_unknown_email_make_one_customer(
    client: httpx.AsyncClient, session_factory: Any
) -> None:
    answers = await asyncio.gather(
        *[client.post("/v1/interactions", json={"customer_email": "rush@example.com", "type": "call"}) for _ in range(6)]
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["customer_id"] for a in answers}) == 1
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1
        assert await session.scalar(select(func.count()).select_from(Interaction)) == 6


async def test_interaction_input_is_validated(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer()
    cid = customer["id"]
    deep_nul: Any = "nul\x00"
    for _ in range(30):
        deep_nul = {"k": deep_nul}
    # Past 20 levels the number check used to stop: 2**63 was stored, NaN and Infinity became null.
    deep_numbers: list[Any] = [2**63, -(2**63), float("nan"), float("inf"), 1e30]
    for _ in range(25):
        deep_numbers = [{"k": deep} for deep in deep_numbers]
    bad_bodies = [
        {"type": "call"},
        {"customer_id": cid, "customer_email": customer["email"], "type": "call"},
        {"customer_id": cid, "type": "Not A Slug"},
        {"customer_id": cid, "type": "call", "occurred_at": "2026-01-01T10:00:00"},
        {"customer_id": cid, "type": "purchase", "amount": "1e20"},
        {"customer_id": cid, "type": "call", "metadata": {"n": 2**70}},
        {"customer_id": cid, "type": "call", "metadata": {"big": "x" * 20_000}},
        {"customer_id": cid, "type": "call", "summary": "nul\x00byte"},
        {"customer_id": cid, "type": "call", "metadata": {"k": "nul\x00"}},
        {"customer_id": cid, "type": "call", "metadata": deep_nul},  # was a 500: the walk stopped at 20 levels
        *({"customer_id": cid, "type": "call", "metadata": deep} for deep in deep_numbers),
        {"customer_email": "not-an-email", "type": "call"},
        {"customer_id": cid, "type": "call", "currency": "eur"},
    ]
    for body in bad_bodies:
        # Written as Python's json writes it: NaN and Infinity as such (JavaScript's JSON.parse would not take them).
        r = await client.post("/v1/interactions", content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
    unknown = await client.post("/v1/interactions", json={"customer_id": str(uuid.uuid4()), "type": "call"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "customer_id"]
    assert (await client.get(f"/v1/interactions/{uuid.uuid4()}")).status_code == 404
    deep_ok: Any = {"n": 10**18, "f": -1.5}
    for _ in range(40):
        deep_ok = {"k": [deep_ok]}
    kept = await client.post("/v1/interactions", json={"customer_id": cid, "type": "call", "metadata": deep_ok})
    assert kept.status_code == 201 and kept.json()["metadata"] == deep_ok, kept.text


async def test_an_interaction_amount_is_answered_stored_and_announced_in_cents(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    """A JSON number was answered (and replayed, and announced) as sent, `100` or `19.9`, while
    the row holds `100.00` and `19.90`, what GET answers."""
    cid = (await make.customer())["id"]
    for key, sent, cents in (
        ("c-1", 100, "100.00"),
        ("c-2", 19.9, "19.90"),
        ("c-3", "7", "7.00"),
        ("c-4", "0.5", "0.50"),
        ("c-5", -0.0, "0.00"),
    ):
        body = {"customer_id": cid, "type": "purchase", "amount": sent, "currency": "EUR"}
        posted = await client.post("/v1/interactions", json=body, headers={"Idempotency-Key": key})
        assert posted.status_code == 201 and posted.json()["amount"] == cents, posted.text
        assert (await client.get(posted.headers["Location"])).json() == posted.json()
        assert (await client.post("/v1/interactions", json=body, headers={"Idempotency-Key": key})).content == posted.content
    by_email = await client.post(
        "/v1/interactions",
        json={
            "customer_email": "cents@example.com",
            "type": "purchase",
            "amount": 5.1,
            "currency": "EUR",
            "metadata": {"n": [1]},
        },
    )
    assert by_email.status_code == 201 and by_email.json()["amount"] == "5.10", by_email.text
    assert (await client.get(by_email.headers["Location"])).json() == by_email.json()
    assert [e["data"]["amount"] for e in await events("interaction.recorded")] == [
        "100.00",
        "19.90",
        "7.00",
        "0.50",
        "0.00",
        "5.10",
    ]


async def test_interaction_list_filters_by_customer_type_and_time_window(client: httpx.AsyncClient, make: Any) -> None:
    a, b = await make.customer(), await make.customer()
    days = [dt.datetime(2026, 3, d, 12, tzinfo=dt.UTC) for d in (1, 2, 3, 4)]
    ids = [
        (await make.interaction(customer_id=a["id"], type=t, occurred_at=at.isoformat()))["id"]
        for t, at in zip(("call", "purchase", "call", "email"), days, strict=True)
    ]
    await make.interaction(customer_id=b["id"], type="call", occurred_at=days[1].isoformat())
    newest_first = (await client.get("/v1/interactions", params={"customer_id": a["id"]})).json()["items"]
    assert [i["id"] for i in newest_first] == list(reversed(ids))
    calls = (await client.get("/v1/interactions", params={"customer_id": a["id"], "type": "call", "sort": "occurred_at"})).json()
    assert [i["id"] for i in calls["items"]] == [ids[0], ids[2]]
    window = {"customer_id": a["id"], "occurred_from": days[1].isoformat(), "occurred_to": days[3].isoformat()}
    assert [i["id"] for i in (await client.get("/v1/interactions", params=window)).json()["items"]] == [ids[2], ids[1]]
    assert (await client.get(f"/v1/interactions/{ids[1]}")).json()["type"] == "purchase"


async def test_an_interaction_time_must_be_one_both_services_apply(client: httpx.AsyncClient, make: Any) -> None:
    """The CEM adds a survey's delay and an invitation's lifetime to when an interaction occurred,
    and refuses (to its DLQ) a time from 9000 on: the CRM's API refuses it too, instead of storing
    an interaction the CEM never gets. It was a 201 for any time up to 9999-12-31."""
    cid = (await make.customer())["id"]
    for sent in ("9000-01-01T00:00:00Z", "8999-12-31T23:00:00-05:00", "9999-12-31T23:59:59Z"):
        r = await client.post("/v1/interactions", json={"customer_id": cid, "type": "call", "occurred_at": sent})
        assert r.status_code == 422, (sent, r.text)
        (error,) = r.json()["errors"]
        assert error["loc"] == ["body", "occurred_at"] and "before 9000-01-01T00:00:00Z" in error["msg"], error
    last = await client.post("/v1/interactions", json={"customer_id": cid, "type": "call", "occurred_at": "8999-12-31T23:59:59Z"})
    assert last.status_code == 201 and last.json()["occurred_at"] == "8999-12-31T23:59:59Z", last.text


# --- an erase or a merge meanwhile ----------------------------------------------------------
# The customer is read as live while an erase or a merge holds its row: the insert used to wait on
# that lock and go in once it was let go, after the erase (summary kept, the old email announced
# after `customer.erased`) or on the duplicate for good. Each answers what it answers once the
# erase or merge is done.


async def test_an_interaction_posted_while_its_customer_is_erased_is_refused_as_erased(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, events: Any
) -> None:
    for headers in ({}, {"Idempotency-Key": "erase-race"}):
        customer = await make.customer()
        body = {"customer_id": customer["id"], "type": "call", "summary": "Private words", "metadata": {"note": "x"}}
        post = functools.partial(client.post, "/v1/interactions", json=body, headers=headers)
        answer = await sent_during(crm_app, erase(crm_app, customer["id"]), post)
        assert answer.status_code == 422 and answer.json()["errors"][0]["msg"] == "erased", answer.text
        assert (await client.get("/v1/interactions", params={"customer_id": customer["id"]})).json()["items"] == []
        assert (await post()).status_code == 422  # what the same request answers afterwards
    assert await events("interaction.recorded") == []


async def test_an_interaction_posted_by_email_while_its_customer_is_erased_makes_a_new_lead(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, events: Any
) -> None:
    customer = await make.customer()
    body = {"customer_email": customer["email"], "type": "call", "summary": "Private words"}
    answer = await sent_during(crm_app, erase(crm_app, customer["id"]), lambda: client.post("/v1/interactions", json=body))
    assert answer.status_code == 201, answer.text
    assert answer.json()["customer_id"] != customer["id"]
    assert (await client.get("/v1/interactions", params={"customer_id": customer["id"]})).json()["items"] == []
    assert (await client.post("/v1/interactions", json=body)).json()["customer_id"] == answer.json()["customer_id"]
    assert {e["subject"] for e in await events("interaction.recorded")} == {answer.json()["customer_id"]}


async def test_an_interaction_posted_while_its_customer_is_merged_lands_on_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, events: Any
) -> None:
    survivor, duplicate = await make.customer(), await make.customer()
    body = {"customer_id": duplicate["id"], "type": "call", "summary": "Hello"}
    post = functools.partial(client.post, "/v1/interactions", json=body, headers={"Idempotency-Key": "merge-race"})
    answer = await sent_during(crm_app, merge(crm_app, survivor["id"], duplicate["id"]), post)
    assert answer.status_code == 201 and answer.json()["customer_id"] == survivor["id"], answer.text
    assert (await client.get(answer.headers["Location"])).json() == answer.json()
    assert (await post()).content == answer.content
    assert (await client.get("/v1/interactions", params={"customer_id": duplicate["id"]})).json()["items"] == []
    [recorded] = await events("interaction.recorded")
    assert recorded["subject"] == survivor["id"] and recorded["data"]["customer_email"] == survivor["email"]


async def test_an_interaction_posted_by_email_while_its_customer_is_merged_never_lands_on_the_duplicate(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    survivor, duplicate = await make.customer(), await make.customer()
    body = {"customer_email": duplicate["email"], "type": "call"}
    change = merge(crm_app, survivor["id"], duplicate["id"])
    answer = await sent_during(crm_app, change, lambda: client.post("/v1/interactions", json=body))
    assert answer.status_code == 201, answer.text
    assert (await client.get("/v1/interactions", params={"customer_id": duplicate["id"]})).json()["items"] == []
    # Where the same request goes now the merge is done (the duplicate gave its address up).
    assert (await client.post("/v1/interactions", json=body)).json()["customer_id"] == answer.json()["customer_id"]


async def test_an_interaction_post_by_id_sends_two_statements(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer read, then one statement for the rows (and the key's answer): the check that
    the customer is still live at the insert rides in that statement."""
    customer = await make.customer()
    await make.interaction(customer_id=customer["id"])  # the key's lookup cached, statements prepared
    pool = crm_app.state.pg_pool
    sent: list[str] = []
    execute_with_args = asyncpg.Connection._execute

    async def counted(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if any(holder._con is self for holder in pool._holders):
            sent.append(query)
        return await execute_with_args(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "_execute", counted)
    for headers in ({}, {"Idempotency-Key": "two-statements"}):
        sent.clear()
        r = await client.post("/v1/interactions", json={"customer_id": customer["id"], "type": "call"}, headers=headers)
        assert r.status_code == 201, r.text
        assert len(sent) == 2, sent
        assert sent[0].lstrip().upper().startswith("SELECT") and "INSERT INTO interactions" in sent[1], sent


# --- the consumer on the real broker -------------------------------------------------------


def interaction_event(source: str = "urn:pos:store-12", event_id: str | None = None, **data: Any) -> bytes:
    payload = InteractionRecorded(**{"type": "purchase", "occurred_at": dt.datetime(2026, 5, 1, 10, tzinfo=dt.UTC), **data})
    event = new_event("interaction.recorded", source=source, subject=None, data=payload)
    if event_id:
        event.id = event_id
    return encode_event(event)


def off_contract_interaction_event(**data: Any) -> bytes:
    """`interaction_event` with `data` written into it as sent (what the model would refuse)."""
    event = orjson.loads(interaction_event(customer_id=uuid.uuid4()))
    event["data"].update(data)
    return orjson.dumps(event)


@pytest.fixture
async def interactions_consumer(
    crm_app: FastAPI, crm_settings: CRMSettings, client: httpx.AsyncClient
) -> AsyncIterator[tuple[str, str]]:
    """The consumer as crm.main registers it, under a fresh group name, reading a topic of
    its own (so events of earlier tests do not reach this one's emptied database).
    Yields (consumer name, topic)."""
    settings = crm_settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}"})
    consumers = {c.name: c for c in build_consumers(settings)(crm_app.state.session_factory)}
    consumer = consumers[f"{settings.consumer_group}.interactions"]
    assert consumer.topics == [TOPIC]
    assert consumer.skip_sources == {SOURCE} and set(consumer.handlers) == {"interaction.recorded"}
    consumer.topics = [f"{TOPIC}.test-{uuid.uuid4().hex[:8]}"]
    await ensure_topics(settings, consumer.topics)
    task = asyncio.create_task(consumer.run())
    yield consumer.name, consumer.topics[0]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await consumer.stop()


async def test_consumed_events_resolve_customers_create_unknown_ones_once_and_never_double_a_row(
    client: httpx.AsyncClient, kafka: Any, interactions_consumer: tuple[str, str], session_factory: Any, events: Any
) -> None:
    known = await make_customer(client, "known@example.com")
    shared_id = uuid.uuid4()
    marker = uuid.uuid4()
    await kafka.produce(
        interactions_consumer[1],
        [
            interaction_event(customer_id=uuid.UUID(known), amount="10.00"),
            interaction_event(customer_email="Stranger@Example.com", type="support_ticket_closed"),
            interaction_event(customer_email="stranger@example.com"),
            interaction_event(customer_email="KNOWN@example.com"),
            interaction_event(customer_email="x@example.com", interaction_id=shared_id),
            interaction_event(customer_email="x@example.com", interaction_id=shared_id),  # re-published: same interaction
            interaction_event(source=SOURCE, customer_id=uuid.UUID(known)),  # the CRM's own: already stored
            interaction_event(customer_id=uuid.UUID(known), interaction_id=marker),
        ],
    )

    async def marker_stored() -> bool:
        return (await client.get(f"/v1/interactions/{marker}")).status_code == 200

    await wait_for(marker_stored, 15)
    async with session_factory() as session:
        per_email = dict(
            (
                await session.execute(
                    select(Customer.email_normalized, func.count(Interaction.id))
                    .join(Interaction, Interaction.customer_id == Customer.id)
                    .group_by(Customer.email_normalized)
                )
            ).all()
        )
        stranger = await session.scalar(select(Customer).where(Customer.email_normalized == "stranger@example.com"))
    assert per_email == {"known@example.com": 3, "stranger@example.com": 2, "x@example.com": 1}
    assert stranger.lifecycle_stage == "lead" and stranger.source == "urn:pos:store-12"
    assert sorted(e["data"]["email"] for e in await events("customer.created")) == [
        "known@example.com",
        "stranger@example.com",
        "x@example.com",
    ]
    assert (await client.get(f"/v1/interactions/{shared_id}")).json()["source"] == "urn:pos:store-12"


async def test_an_event_for_an_unknown_customer_goes_to_the_dlq_and_the_rest_applies(
    client: httpx.AsyncClient, kafka: Any, interactions_consumer: tuple[str, str]
) -> None:
    name, topic = interactions_consumer
    known = await make_customer(client, "fine@example.com")
    good = uuid.uuid4()
    missing = uuid.uuid4()
    bad_values = [
        interaction_event(customer_id=missing),
        off_contract_interaction_event(customer_id=None, customer_email="not an email"),
        interaction_event(customer_email="nul@example.com", summary="a\x00b"),
    ]
    await kafka.produce(topic, [*bad_values, interaction_event(customer_id=uuid.UUID(known), interaction_id=good)])

    async def stored() -> bool:
        return (await client.get(f"/v1/interactions/{good}")).status_code == 200

    await wait_for(stored, 15)
    reasons = await kafka.dlq_reasons(f"{topic}.dlq", name, expected=3)
    assert set(reasons) == set(bad_values)
    assert f"unknown customer_id: {missing}" in reasons[bad_values[0]]
    assert "not an email address" in reasons[bad_values[1]]
    assert "NUL" in reasons[bad_values[2]]


async def test_a_batch_is_applied_with_a_handful_of_statements(client: httpx.AsyncClient, crm_app: FastAPI, make: Any) -> None:
    """200 events, 50 of them for unknown emails: the statement count does not grow with the batch."""
    known = [uuid.UUID((await make.customer())["id"]) for _ in range(5)]
    deliveries = []
    for i in range(200):
        data = {"customer_id": known[i % 5]} if i % 4 else {"customer_email": f"new-{i}@example.com"}
        payload = InteractionRecorded(type="purchase", occurred_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC), **data)
        deliveries.append(
            Delivery(new_event("interaction.recorded", source="urn:shop", subject=None, data=payload), payload, None)
        )  # type: ignore[arg-type]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    engine = crm_app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        async with crm_app.state.session_factory() as session, session.begin():
            inserted = await apply_interaction_events(session, deliveries)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert inserted == 200
    writes = [s for s in statements if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN"))]
    assert len(writes) <= 8, writes


async def make_customer(client: httpx.AsyncClient, email: str) -> str:
    r = await client.post("/v1/customers", json={"email": email, "name": "N"})
    assert r.status_code == 201
    customer_id: str = r.json()["id"]
    return customer_id
