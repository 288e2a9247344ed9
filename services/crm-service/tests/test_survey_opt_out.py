"""`survey.opted_out`: a recipient who unsubscribes from a survey's link; `survey.opted_in`: one who
had, asking from a link for surveys again. The CRM keeps each event on the customer's timeline
and, live only, sets (or clears) the customer's `survey_opt_out` once, as any change of a customer
is made: a new version, its history, a `customer.updated` for the CEM. Within a poll the later
wish wins."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from crm.config import CRMSettings
from crm.consumers.cem_feedback import consumer_name, live_handlers, projection_handlers
from crm.customers.models import Customer
from crm.experience.models import SURVEY_OPTED_IN, SURVEY_OPTED_OUT, ExperienceEvent
from crm.experience.service import apply_survey_wishes
from crm.main import build_consumers
from cxkit.db import session_connection
from cxkit.events import CloudEvent, encode_event
from cxkit.kafka.consumer import Decoded
from cxkit.testing import wait_for

from .conftest import delivery
from .customer_races import merge, sent_during
from .test_experience import timeline

T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


async def customer(client: httpx.AsyncClient, customer_id: Any) -> dict[str, Any]:
    r = await client.get(f"/v1/customers/{customer_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def opt_out_and_version(client: httpx.AsyncClient, customer_id: Any) -> tuple[bool, int]:
    current = await customer(client, customer_id)
    return current["survey_opt_out"], current["version"]


async def history(client: httpx.AsyncClient, customer_id: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/customers/{customer_id}/history")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def updates_of(events: Any, customer_id: Any) -> list[dict[str, Any]]:
    return [e for e in await events("customer.updated") if e["subject"] == str(customer_id)]


async def stored_rows(session_factory: Any) -> int:
    async with session_factory() as session:
        return int(await session.scalar(select(func.count()).select_from(ExperienceEvent)) or 0)


def live_handler(session_factory: Any, crm_settings: CRMSettings, kind: str) -> Any:
    """`await apply(*events)`: the live consumer's handler of `kind` on these events, in one
    transaction (as one poll would)."""
    handler = live_handlers(crm_settings)[kind]

    async def apply(*events: CloudEvent) -> None:
        async with session_factory() as session, session.begin():
            await handler(session, [delivery(e) for e in events])

    return apply


@pytest.fixture
def opt_out(session_factory: Any, crm_settings: CRMSettings) -> Any:
    return live_handler(session_factory, crm_settings, SURVEY_OPTED_OUT)


@pytest.fixture
def opt_in(session_factory: Any, crm_settings: CRMSettings) -> Any:
    return live_handler(session_factory, crm_settings, SURVEY_OPTED_IN)


@pytest.fixture
def poll(session_factory: Any, crm_settings: CRMSettings) -> Any:
    """`await poll(*events)`: one poll of the live `cem.feedback.v1` consumer as it applies it (its
    processed events, then each run of consecutive events of one type to its handler, in one
    transaction), without a broker."""
    [consumer] = [c for c in build_consumers(crm_settings)(session_factory) if c.name == consumer_name(crm_settings)]

    async def apply(*events: CloudEvent) -> None:
        await consumer.apply(Decoded(deliveries=[delivery(e) for e in events]))

    return apply


async def test_an_opt_out_marks_the_customer_once_with_a_new_version_its_history_and_one_customer_updated(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_out: Any, events: Any
) -> None:
    created = await make.customer(owner="kim@ourco.example")
    cid = uuid.UUID(created["id"])
    assert (created["survey_opt_out"], created["version"]) == (False, 1)
    wish = cem.opted_out(cid, at=at(0))
    # In one poll: the event twice, and the same wish from another invitation under a new event id.
    await opt_out(wish, wish, cem.opted_out(cid, at=at(0.5)))

    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (True, 2)
    [updated] = await updates_of(events, cid)
    assert updated["_topic"] == "crm.customers.v1" and updated["_key"] == str(cid)
    data = updated["data"]
    assert (data["survey_opt_out"], data["version"], data["changed"]) == (True, 2, ["survey_opt_out"])
    [created_event] = [e for e in await events("customer.created") if e["subject"] == str(cid)]
    # The whole record as any update announces it, with its new version.
    expected = {"survey_opt_out": True, "version": 2, "updated_at": data["updated_at"], "changed": ["survey_opt_out"]}
    assert data == created_event["data"] | expected
    [change] = await history(client, cid)
    assert (change["version"], change["via"], change["changed_by"]) == (2, "survey_opt_out", None)
    assert change["changes"] == [{"field": "survey_opt_out", "from": False, "to": True}]

    # Redelivered later, or reported again from another invitation: nothing changes.
    await opt_out(wish)
    await opt_out(cem.opted_out(cid, at=at(1)))
    assert await customer(client, cid) == after
    assert len(await updates_of(events, cid)) == 1
    assert len(await history(client, cid)) == 1


async def test_a_customer_who_opted_out_already_gets_no_new_version(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_out: Any, events: Any
) -> None:
    cid = uuid.UUID((await make.customer(survey_opt_out=True))["id"])
    await opt_out(cem.opted_out(cid, at=at(0)))
    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (True, 1)
    assert await updates_of(events, cid) == [] and await history(client, cid) == []
    assert [e["kind"] for e in await timeline(client, cid)] == ["survey.opted_out"]  # still on the timeline


async def test_a_poll_of_opt_outs_marks_its_customers_with_one_update(
    client: httpx.AsyncClient, make: Any, cem: Any, session_factory: Any, crm_settings: CRMSettings, events: Any
) -> None:
    customers = [uuid.UUID((await make.customer())["id"]) for _ in range(5)]
    handler = live_handlers(crm_settings)[SURVEY_OPTED_OUT]
    statements: list[str] = []
    async with session_factory() as session, session.begin():
        conn = await session_connection(session)
        conn.add_query_logger(lambda record: statements.append(record.query))
        await handler(session, [delivery(cem.opted_out(cid)) for cid in customers * 2])
    updates = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "WITH")) and "customers" in s]
    assert len(updates) == 1, updates
    for cid in customers:
        assert (await customer(client, cid))["survey_opt_out"] is True
        assert len(await updates_of(events, cid)) == 1


async def test_a_bare_address_an_unknown_and_an_erased_customer_change_nothing_and_fail_nothing(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_out: Any, events: Any, session_factory: Any
) -> None:
    erased = uuid.UUID((await make.customer())["id"])
    assert (await client.delete(f"/v1/customers/{erased}")).status_code == 204
    before = await customer(client, erased)
    updates_before = len(await events("customer.updated"))

    await opt_out(cem.opted_out(None, email="bare@example.com"), cem.opted_out(uuid.uuid4()), cem.opted_out(erased))

    assert await customer(client, erased) == before
    assert len(await events("customer.updated")) == updates_before
    assert await stored_rows(session_factory) == 1  # the erased customer's, kept like its other CEM events


async def test_an_opt_out_for_a_merged_duplicate_marks_its_survivor(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_out: Any, events: Any
) -> None:
    survivor = uuid.UUID((await make.customer())["id"])
    duplicate = uuid.UUID((await make.customer())["id"])
    merged = await client.post(f"/v1/customers/{survivor}/merge", json={"duplicate_id": str(duplicate)})
    assert merged.status_code == 200, merged.text
    await opt_out(cem.opted_out(duplicate, at=at(0)))

    after = await customer(client, survivor)
    assert (after["survey_opt_out"], after["version"]) == (True, merged.json()["version"] + 1)
    assert [u["data"]["survey_opt_out"] for u in await updates_of(events, survivor)][-1] is True
    assert await updates_of(events, duplicate) == []
    assert [c["via"] for c in await history(client, duplicate)] == ["merge"]  # the duplicate itself stays as merged
    assert [e["kind"] for e in await timeline(client, survivor, kind=["survey.opted_out"])] == ["survey.opted_out"]


async def test_an_opt_out_consumed_while_its_customer_is_merged_marks_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, cem: Any, opt_out: Any, events: Any
) -> None:
    """The wish was resolved to the duplicate (live in the statement's snapshot), whose row, locked
    once the merge was done, no longer qualified: the survivor kept surveying someone who said no."""
    survivor = uuid.UUID((await make.customer())["id"])
    duplicate = uuid.UUID((await make.customer())["id"])

    async def consume() -> Any:
        return await opt_out(cem.opted_out(duplicate, at=at(0)))

    await sent_during(crm_app, merge(crm_app, str(survivor), str(duplicate)), consume)
    assert (await customer(client, survivor))["survey_opt_out"] is True
    assert [u["data"]["survey_opt_out"] for u in await updates_of(events, survivor)][-1] is True
    assert [e["kind"] for e in await timeline(client, survivor, kind=["survey.opted_out"])] == ["survey.opted_out"]


@pytest.mark.parametrize("opted_out", [True, False], ids=["opt-out", "opt-in"])
async def test_a_survey_wish_applied_while_its_customer_is_merged_reaches_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, cem: Any, session_factory: Any, events: Any, opted_out: bool
) -> None:
    """The wishes' own statement (`apply_survey_wishes`), without the events stored before it in
    the consumer's transaction: it waits on the merge's lock of the duplicate and is then told of
    the survivor."""
    survivor = uuid.UUID((await make.customer(survey_opt_out=not opted_out))["id"])
    duplicate = uuid.UUID((await make.customer(survey_opt_out=not opted_out))["id"])
    wish = (cem.opted_out if opted_out else cem.opted_in)(duplicate, at=utcnow_plus_an_hour())

    async def apply() -> Any:
        async with session_factory() as session, session.begin():
            return await apply_survey_wishes(session, [delivery(wish)], opted_out=opted_out)

    assert await sent_during(crm_app, merge(crm_app, str(survivor), str(duplicate)), apply) == 1
    assert (await customer(client, survivor))["survey_opt_out"] is opted_out
    assert [u["data"]["survey_opt_out"] for u in await updates_of(events, survivor)][-1] is opted_out
    assert await updates_of(events, duplicate) == []


def utcnow_plus_an_hour() -> dt.datetime:
    """A wish newer than any time a customer made now holds."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


async def test_a_replay_stores_the_opt_out_but_leaves_the_customer_alone(
    client: httpx.AsyncClient, make: Any, cem: Any, session_factory: Any, events: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    async with session_factory() as session, session.begin():
        await projection_handlers()[SURVEY_OPTED_OUT](session, [delivery(cem.opted_out(cid, at=at(0)))])
    assert await stored_rows(session_factory) == 1
    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (False, 1)
    assert await updates_of(events, cid) == [] and await history(client, cid) == []


async def test_the_timeline_shows_the_opt_out_and_the_change_it_made(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, opt_out: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    invited = cem.invited(cid, at=at(0))
    invitation_id = invited.data["invitation_id"]
    wish = cem.opted_out(cid, invitation_id, at=at(2), cancelled_invitations=1)
    await apply_cem(invited)
    await opt_out(wish)

    entries = await timeline(client, cid, kind=["survey.opted_out", "survey.invited", "customer_changed"])
    assert [e["kind"] for e in entries] == ["customer_changed", "survey.opted_out", "survey.invited"]
    changed, opted_out, _ = entries
    assert (changed["via"], changed["changed_by"], changed["version"]) == ("survey_opt_out", None, 2)
    assert changed["changes"] == [{"field": "survey_opt_out", "from": False, "to": True}]
    assert (opted_out["invitation_id"], opted_out["survey_id"], opted_out["survey_name"], opted_out["channel"]) == (
        invitation_id,
        str(cem.survey_id),
        "Checkout NPS",
        "email",
    )
    assert (opted_out["survey_kind"], opted_out["touchpoint"]) == ("nps", "checkout")
    assert dt.datetime.fromisoformat(opted_out["at"]) == at(2)
    assert "email" not in opted_out  # the address stays with the CEM service


async def test_the_consumer_applies_an_opt_out_from_the_broker_and_dead_letters_no_unknown_customer(
    client: httpx.AsyncClient, make: Any, cem: Any, kafka: Any, feedback_consumer: Any
) -> None:
    name, topic = feedback_consumer.name, feedback_consumer.topic
    cid = uuid.UUID((await make.customer())["id"])
    wish = cem.opted_out(cid, at=at(0))
    await kafka.produce(topic, [encode_event(cem.opted_out(uuid.uuid4())), encode_event(wish), encode_event(wish)])

    async def marked() -> Any:
        current = await customer(client, cid)
        return current if current["survey_opt_out"] else None

    assert (await wait_for(marked, 15))["version"] == 2
    await kafka.produce(topic, [b"{not json"])  # dead-lettered after anything the first poll could have
    reasons = await kafka.dlq_reasons(f"{topic}.dlq", name, expected=1)
    assert list(reasons) == [b"{not json"]
    assert (await customer(client, cid))["version"] == 2


# --- survey.opted_in ------------------------------------------------------------------------------


async def test_an_opt_in_after_an_opt_out_clears_the_flag_with_a_new_version_its_history_and_one_customer_updated(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_out: Any, opt_in: Any, events: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    await opt_out(cem.opted_out(cid, at=at(0)))
    assert await opt_out_and_version(client, cid) == (True, 2)
    wish = cem.opted_in(cid, at=at(1))
    # In one poll: the event twice, and the same wish from another invitation under a new event id.
    await opt_in(wish, wish, cem.opted_in(cid, at=at(1.5)))

    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (False, 3)
    opted_out, opted_in = await updates_of(events, cid)
    assert opted_in["_topic"] == "crm.customers.v1" and opted_in["_key"] == str(cid)
    data = opted_in["data"]
    assert (data["survey_opt_out"], data["version"], data["changed"]) == (False, 3, ["survey_opt_out"])
    # The whole record as any update announces it, with its new version.
    assert data == opted_out["data"] | {"survey_opt_out": False, "version": 3, "updated_at": data["updated_at"]}
    newest, first = await history(client, cid)
    assert (newest["version"], newest["via"], newest["changed_by"]) == (3, "survey_opt_in", None)
    assert newest["changes"] == [{"field": "survey_opt_out", "from": True, "to": False}]
    assert (first["version"], first["via"]) == (2, "survey_opt_out")

    # Redelivered later, or reported again from another invitation: nothing changes.
    await opt_in(wish)
    await opt_in(cem.opted_in(cid, at=at(2)))
    assert await customer(client, cid) == after
    assert len(await updates_of(events, cid)) == 2
    assert len(await history(client, cid)) == 2


async def test_an_opt_in_for_a_customer_not_opted_out_changes_nothing(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_in: Any, events: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    await opt_in(cem.opted_in(cid, at=at(0)))
    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (False, 1)
    assert await updates_of(events, cid) == [] and await history(client, cid) == []
    assert [e["kind"] for e in await timeline(client, cid)] == ["survey.opted_in"]  # still on the timeline


async def test_a_poll_of_opt_ins_clears_its_customers_with_one_update(
    client: httpx.AsyncClient, make: Any, cem: Any, session_factory: Any, crm_settings: CRMSettings, events: Any
) -> None:
    customers = [uuid.UUID((await make.customer(survey_opt_out=True))["id"]) for _ in range(5)]
    handler = live_handlers(crm_settings)[SURVEY_OPTED_IN]
    statements: list[str] = []
    async with session_factory() as session, session.begin():
        conn = await session_connection(session)
        conn.add_query_logger(lambda record: statements.append(record.query))
        await handler(session, [delivery(cem.opted_in(cid)) for cid in customers * 2])
    updates = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "WITH")) and "customers" in s]
    assert len(updates) == 1, updates
    for cid in customers:
        assert await opt_out_and_version(client, cid) == (False, 2)
        [updated] = await updates_of(events, cid)
        assert updated["data"]["survey_opt_out"] is False


@pytest.mark.parametrize(
    ("opted_out_before", "wishes"),
    [(False, ("opted_out", "opted_in")), (True, ("opted_in", "opted_out"))],
    ids=["opt-out-then-opt-in", "opt-in-then-opt-out"],
)
async def test_of_an_opt_out_and_an_opt_in_in_one_poll_the_later_one_wins(
    client: httpx.AsyncClient,
    make: Any,
    cem: Any,
    poll: Any,
    events: Any,
    opted_out_before: bool,
    wishes: tuple[str, str],
) -> None:
    cid = uuid.UUID((await make.customer(survey_opt_out=opted_out_before))["id"])
    first, then = (getattr(cem, wish)(cid, at=at(i)) for i, wish in enumerate(wishes))
    await poll(first, then)

    after = await customer(client, cid)
    # Both applied, in their order: the flag went one way and back.
    assert (after["survey_opt_out"], after["version"]) == (opted_out_before, 3)
    assert [u["data"]["survey_opt_out"] for u in await updates_of(events, cid)] == [
        not opted_out_before,
        opted_out_before,
    ]
    vias = ["survey_opt_out", "survey_opt_in"] if not opted_out_before else ["survey_opt_in", "survey_opt_out"]
    assert [c["via"] for c in await history(client, cid)] == vias[::-1]  # newest first
    assert {e["kind"] for e in await timeline(client, cid, kind=["survey.opted_out", "survey.opted_in"])} == {
        "survey.opted_out",
        "survey.opted_in",
    }

    # The same poll delivered again (its offsets not committed): its events were applied, nothing changes.
    await poll(first, then)
    assert await customer(client, cid) == after
    assert len(await updates_of(events, cid)) == 2


async def test_a_poll_mixing_opt_outs_and_opt_ins_of_several_customers_ends_with_each_ones_last_wish(
    client: httpx.AsyncClient, make: Any, cem: Any, poll: Any, events: Any
) -> None:
    leaving = uuid.UUID((await make.customer())["id"])  # opts out, then back in
    returning = uuid.UUID((await make.customer(survey_opt_out=True))["id"])  # opts in, then out again
    await poll(
        cem.opted_out(leaving, at=at(0)),
        cem.opted_in(returning, at=at(0)),
        cem.opted_in(leaving, at=at(1)),  # a run of two opt-ins, for both customers
        cem.opted_out(returning, at=at(1)),
    )
    assert await opt_out_and_version(client, leaving) == (False, 3)
    assert await opt_out_and_version(client, returning) == (True, 3)
    assert [u["data"]["survey_opt_out"] for u in await updates_of(events, leaving)] == [True, False]
    assert [u["data"]["survey_opt_out"] for u in await updates_of(events, returning)] == [False, True]


async def test_a_bare_address_an_unknown_and_an_erased_customer_opting_in_change_nothing_and_fail_nothing(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_in: Any, events: Any, session_factory: Any
) -> None:
    erased = uuid.UUID((await make.customer(survey_opt_out=True))["id"])
    assert (await client.delete(f"/v1/customers/{erased}")).status_code == 204
    before = await customer(client, erased)
    assert before["survey_opt_out"] is True
    updates_before = len(await events("customer.updated"))

    await opt_in(cem.opted_in(None, email="bare@example.com"), cem.opted_in(uuid.uuid4()), cem.opted_in(erased))

    assert await customer(client, erased) == before
    assert len(await events("customer.updated")) == updates_before
    assert await stored_rows(session_factory) == 1  # the erased customer's, kept like its other CEM events


async def test_an_opt_in_for_a_merged_duplicate_clears_its_survivor(
    client: httpx.AsyncClient, make: Any, cem: Any, opt_in: Any, events: Any
) -> None:
    survivor = uuid.UUID((await make.customer(survey_opt_out=True))["id"])
    duplicate = uuid.UUID((await make.customer(survey_opt_out=True))["id"])
    merged = await client.post(f"/v1/customers/{survivor}/merge", json={"duplicate_id": str(duplicate)})
    assert merged.status_code == 200, merged.text
    assert merged.json()["survey_opt_out"] is True
    await opt_in(cem.opted_in(duplicate, at=at(0)))

    after = await customer(client, survivor)
    assert (after["survey_opt_out"], after["version"]) == (False, merged.json()["version"] + 1)
    assert [u["data"]["survey_opt_out"] for u in await updates_of(events, survivor)][-1] is False
    assert (await history(client, survivor))[0]["via"] == "survey_opt_in"
    assert [c["via"] for c in await history(client, duplicate)] == ["merge"]  # the duplicate itself stays as merged
    assert [e["kind"] for e in await timeline(client, survivor, kind=["survey.opted_in"])] == ["survey.opted_in"]


async def test_a_replay_stores_the_opt_in_but_leaves_the_customer_alone(
    client: httpx.AsyncClient, make: Any, cem: Any, session_factory: Any, events: Any
) -> None:
    cid = uuid.UUID((await make.customer(survey_opt_out=True))["id"])
    async with session_factory() as session, session.begin():
        await projection_handlers()[SURVEY_OPTED_IN](session, [delivery(cem.opted_in(cid, at=at(0)))])
    assert await stored_rows(session_factory) == 1
    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (True, 1)
    assert await updates_of(events, cid) == [] and await history(client, cid) == []


async def test_the_timeline_shows_the_opt_in_and_the_change_it_made(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, opt_out: Any, opt_in: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    invited = cem.invited(cid, at=at(0))
    invitation_id = invited.data["invitation_id"]
    await apply_cem(invited)
    await opt_out(cem.opted_out(cid, invitation_id, at=at(2)))
    await opt_in(cem.opted_in(cid, invitation_id, at=at(3)))

    entries = await timeline(client, cid, kind=["survey.opted_in", "survey.opted_out", "customer_changed"])
    assert [e["kind"] for e in entries] == ["customer_changed", "customer_changed", "survey.opted_in", "survey.opted_out"]
    changed, _, opted_in, opted_out = entries
    assert (changed["via"], changed["changed_by"], changed["version"]) == ("survey_opt_in", None, 3)
    assert changed["changes"] == [{"field": "survey_opt_out", "from": True, "to": False}]
    assert (opted_in["invitation_id"], opted_in["survey_id"], opted_in["survey_name"], opted_in["channel"]) == (
        invitation_id,
        str(cem.survey_id),
        "Checkout NPS",
        "email",
    )
    assert (opted_in["survey_kind"], opted_in["touchpoint"]) == ("nps", "checkout")
    assert dt.datetime.fromisoformat(opted_in["at"]) == at(3)
    assert opted_in["id"] != opted_out["id"]  # the same invitation's link, each wish its own entry
    assert "email" not in opted_in  # the address stays with the CEM service

    # Out again through the same link: a wish of its own, on the timeline too.
    again = cem.opted_out(cid, invitation_id, at=at(4))
    await opt_out(again, again)
    entries = await timeline(client, cid, kind=["survey.opted_in", "survey.opted_out"])
    assert [(e["kind"], dt.datetime.fromisoformat(e["at"])) for e in entries] == [
        ("survey.opted_out", at(4)),
        ("survey.opted_in", at(3)),
        ("survey.opted_out", at(2)),
    ]


async def test_the_consumer_applies_an_opt_out_and_then_an_opt_in_from_the_broker(
    client: httpx.AsyncClient, make: Any, cem: Any, kafka: Any, feedback_consumer: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    await kafka.produce(
        feedback_consumer.topic,
        [
            encode_event(cem.opted_out(cid, at=at(0))),
            encode_event(cem.opted_in(cid, at=at(1))),
            encode_event(cem.opted_in(uuid.uuid4())),
        ],
    )

    async def both_applied() -> Any:
        current = await customer(client, cid)
        return current if current["version"] == 3 else None

    assert (await wait_for(both_applied, 15))["survey_opt_out"] is False


async def wish_time(session_factory: Any, customer_id: Any) -> dt.datetime | None:
    async with session_factory() as session:
        stored: dt.datetime | None = await session.scalar(select(Customer.survey_opt_out_at).where(Customer.id == customer_id))
        return stored


async def test_a_wish_applied_late_changes_nothing_when_a_newer_one_was_applied_before(
    client: httpx.AsyncClient, make: Any, cem: Any, poll: Any, events: Any, session_factory: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    stale = cem.opted_out(cid, at=at(1))  # sent to the DLQ, say, and sent again from it later
    await poll(cem.opted_out(cid, at=at(0)))
    await poll(cem.opted_in(cid, at=at(2)))
    settled = await customer(client, cid)
    assert (settled["survey_opt_out"], settled["version"]) == (False, 3)
    assert await wish_time(session_factory, cid) == at(2)

    await poll(stale)
    assert await customer(client, cid) == settled
    assert len(await updates_of(events, cid)) == 2 and len(await history(client, cid)) == 2
    assert await wish_time(session_factory, cid) == at(2)
    assert "survey.opted_out" in [e["kind"] for e in await timeline(client, cid)]  # kept on the timeline all the same

    # In one poll, arriving the other way round: the wish asked later wins.
    await poll(cem.opted_in(cid, at=at(4)), cem.opted_out(cid, at=at(3)))
    assert (await customer(client, cid))["survey_opt_out"] is False
    await poll(cem.opted_out(cid, at=at(5)))
    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (True, 4)


async def test_a_wish_the_flag_holds_already_moves_its_time_on_so_an_older_opposite_one_changes_nothing(
    client: httpx.AsyncClient, make: Any, cem: Any, poll: Any, events: Any, session_factory: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    await poll(cem.opted_out(cid, at=at(0)))
    marked = await customer(client, cid)
    await poll(cem.opted_out(cid, at=at(3)))  # from another invitation: no new version, a newer time
    assert await customer(client, cid) == marked
    assert await wish_time(session_factory, cid) == at(3)
    assert len(await updates_of(events, cid)) == 1 and len(await history(client, cid)) == 1

    await poll(cem.opted_in(cid, at=at(2)))  # asked before the last opt-out
    assert await customer(client, cid) == marked


async def test_a_change_by_hand_is_dated_and_an_older_wish_arriving_after_it_changes_nothing(
    client: httpx.AsyncClient, make: Any, cem: Any, poll: Any, events: Any, session_factory: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    assert await wish_time(session_factory, cid) is None  # as created: any wish applies
    await poll(cem.opted_out(cid, at=at(0)))
    before = dt.datetime.now(dt.UTC)
    r = await client.patch(f"/v1/customers/{cid}", json={"survey_opt_out": False}, headers={"If-Match": '"2"'})
    assert r.status_code == 200, r.text
    by_hand = await wish_time(session_factory, cid)
    assert by_hand is not None and before - dt.timedelta(seconds=5) <= by_hand <= dt.datetime.now(dt.UTC)
    assert [c["via"] for c in await history(client, cid)] == ["update", "survey_opt_out"]  # the time is not history

    await poll(cem.opted_out(cid, at=at(1)))  # asked before the change by hand, applied after it
    after = await customer(client, cid)
    assert (after["survey_opt_out"], after["version"]) == (False, 3)
    assert await wish_time(session_factory, cid) == by_hand

    # A change that leaves the flag as it is does not date it.
    r = await client.patch(f"/v1/customers/{cid}", json={"name": "Renamed"}, headers={"If-Match": '"3"'})
    assert r.status_code == 200, r.text
    assert await wish_time(session_factory, cid) == by_hand

    await poll(cem.opted_out(cid, at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)))
    assert (await customer(client, cid))["survey_opt_out"] is True


async def test_a_batch_upsert_dates_the_flag_it_changes(
    client: httpx.AsyncClient, make: Any, cem: Any, poll: Any, session_factory: Any
) -> None:
    created = await make.customer(email="wish@example.com")
    cid = uuid.UUID(created["id"])
    r = await client.post("/v1/customers/batch", json={"items": [{"email": "wish@example.com", "survey_opt_out": True}]})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "updated", r.text
    assert await wish_time(session_factory, cid) is not None
    await poll(cem.opted_in(cid, at=at(0)))  # asked before the upsert
    assert (await customer(client, cid))["survey_opt_out"] is True


@pytest.mark.parametrize("newer", ["duplicate", "survivor"])
async def test_a_merge_keeps_the_latest_time_either_record_asked_for_its_flag(
    client: httpx.AsyncClient, make: Any, cem: Any, poll: Any, session_factory: Any, newer: str
) -> None:
    survivor = uuid.UUID((await make.customer())["id"])
    duplicate = uuid.UUID((await make.customer())["id"])
    # Both opted out and back in; one of them asked to be surveyed again later than the other.
    late, early = (duplicate, survivor) if newer == "duplicate" else (survivor, duplicate)
    await poll(cem.opted_out(early, at=at(0)), cem.opted_out(late, at=at(0)))
    await poll(cem.opted_in(early, at=at(1)), cem.opted_in(late, at=at(5)))
    version = (await customer(client, survivor))["version"]
    merged = await client.post(
        f"/v1/customers/{survivor}/merge", json={"duplicate_id": str(duplicate)}, headers={"If-Match": f'"{version}"'}
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["survey_opt_out"] is False
    assert await wish_time(session_factory, survivor) == at(5)

    # An opt-out asked between the two opt-ins, arriving now, for either id: the later opt-in stands.
    await poll(cem.opted_out(duplicate, at=at(3)), cem.opted_out(survivor, at=at(3)))
    assert (await customer(client, survivor))["survey_opt_out"] is False
    await poll(cem.opted_out(duplicate, at=at(6)))
    assert (await customer(client, survivor))["survey_opt_out"] is True


async def test_a_merge_that_takes_an_opt_out_from_the_duplicate_keeps_the_time_it_was_asked(
    client: httpx.AsyncClient, make: Any, cem: Any, poll: Any, session_factory: Any
) -> None:
    survivor = uuid.UUID((await make.customer())["id"])
    duplicate = uuid.UUID((await make.customer())["id"])
    await poll(cem.opted_out(survivor, at=at(0)), cem.opted_out(duplicate, at=at(2)))
    await poll(cem.opted_in(survivor, at=at(1)))
    merged = await client.post(f"/v1/customers/{survivor}/merge", json={"duplicate_id": str(duplicate)})
    assert merged.status_code == 200, merged.text
    assert merged.json()["survey_opt_out"] is True  # an opt-out on either record is honoured
    assert await wish_time(session_factory, survivor) == at(2)
    await poll(cem.opted_in(survivor, at=at(1.5)))  # asked before the duplicate's opt-out
    assert (await customer(client, survivor))["survey_opt_out"] is True
