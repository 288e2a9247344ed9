"""Every `crm.customers.v1` type applied to the CEM: merges re-key all data to the survivor,
erasures leave no personal data, deal values and lead conversions reach the experience view,
and a follow-up's CRM task closes the follow-up."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from cem.consumers import crm_customers
from cem.customer_data import customer_data
from cem.customers.models import CustomerProfile
from cem.db import OutboxMessage
from cem.followups.models import Followup
from cem.models import Base
from cem.touchpoints.models import TouchpointInteraction
from cxkit.events.payloads import (
    CustomerCreated,
    CustomerErased,
    CustomerMerged,
    CustomerSnapshot,
    CustomerUpdated,
    DealStageChanged,
    LeadConverted,
    TaskCompleted,
)
from cxkit.testing import bearer

from .conftest import delivery, interaction, snapshot

NOW = dt.datetime.now(dt.UTC)


def merged(survivor: uuid.UUID, duplicate: uuid.UUID, version: int = 2, **fields: Any) -> Any:
    return delivery(
        "customer.merged",
        CustomerMerged(
            survivor_id=survivor, duplicate_id=duplicate, survivor=CustomerSnapshot(**snapshot(survivor, version, **fields))
        ),
    )


def erased(customer_id: uuid.UUID) -> Any:
    return delivery("customer.erased", CustomerErased(customer_id=customer_id, erased_at=NOW))


def deal(customer_id: uuid.UUID, open_value: str, at: dt.datetime) -> Any:
    return delivery(
        "deal.stage_changed",
        DealStageChanged(
            deal_id=uuid.uuid4(),
            customer_id=customer_id,
            pipeline_id=uuid.uuid4(),
            to_stage="Proposal",
            status="open",
            changed_at=at,
            customer_open_deal_value=Decimal(open_value),
        ),
    )


def task_done(customer_id: uuid.UUID, followup_id: uuid.UUID | str, origin: str = "followup") -> Any:
    return delivery(
        "task.completed",
        TaskCompleted(
            task_id=uuid.uuid4(),
            customer_id=customer_id,
            origin=origin,
            origin_ref=str(followup_id),
            completed_at=NOW,
            completed_by="kim@ourco.example",
        ),
    )


async def count(session_factory: Any, model: Any, *where: Any) -> int:
    async with session_factory() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def rows_by_table(session_factory: Any, customer_id: uuid.UUID) -> dict[str, int]:
    """The customer's rows in every table of the registered customer data (`cem.customer_data`)."""
    tables = [Base.metadata.tables[name] for name in sorted(customer_data().tables)]
    return {table.name: await count(session_factory, table, table.c.customer_id == customer_id) for table in tables}


async def test_merge_moves_every_answer_and_record_to_the_survivor_and_keeps_analytics(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    await make.touchpoint("checkout")
    survey = await make.survey("nps", touchpoint="checkout", trigger={"interaction_type": "purchase"})
    survivor = await make.customer(name="Ada Lovelace", email="ada@example.com")
    duplicate = await make.customer(name="A. Lovelace", email="a.lovelace@example.com")
    await make.answer(survey["id"], {"nps": 10}, customer_id=str(survivor))
    await make.answer(survey["id"], {"nps": 3}, customer_id=str(duplicate))  # a detractor: a follow-up
    await client.post("/v1/feedback", json={"customer_id": str(duplicate), "channel": "chat", "text": "Meh"})
    await apply(interaction(duplicate), interaction(duplicate))  # an invitation and a suppression
    asked = await make.invitation(survey["id"], customer_id=str(duplicate))
    assert (await client.post(f"/r/{asked['token']}/unsubscribe")).status_code == 200  # an opt-out
    nps_before = (await client.get("/v1/analytics/nps")).json()
    duplicates = await rows_by_table(session_factory, duplicate)
    assert all(duplicates.values()), duplicates  # every registered domain holds some of theirs
    survivors = await rows_by_table(session_factory, survivor)

    await apply(merged(survivor, duplicate, company="Analytical Engines"))
    await apply(merged(survivor, duplicate, company="Analytical Engines"))  # a redelivery changes nothing

    view = (await client.get(f"/v1/customers/{survivor}/experience")).json()
    assert view["customer"]["company"] == "Analytical Engines"
    assert sorted(r["score"]["value"] for r in view["responses"]) == [3, 10]
    summary = view["summary"]
    assert (summary["responses"], summary["feedback"], summary["open_followups"], summary["suppressions"]) == (2, 1, 1, 1)
    assert len(view["invitations"]) == 2 and len(view["touchpoint_history"]) == 2
    assert view["customer"]["survey_opt_out"] is True  # the duplicate's opt-out holds for the survivor
    assert set((await rows_by_table(session_factory, duplicate)).values()) == {0}
    assert await rows_by_table(session_factory, survivor) == {t: survivors[t] + duplicates[t] for t in duplicates}
    assert (await client.get("/v1/analytics/nps")).json() == nps_before

    gone = await client.get(f"/v1/customers/{duplicate}/experience", params={"limit": 5})
    assert gone.status_code == 308 and gone.headers["content-type"] == "application/problem+json"
    assert gone.json()["merged_into"] == str(survivor)
    assert gone.headers["location"] == f"/v1/customers/{survivor}/experience?limit=5"
    followed = await client.get(f"/v1/customers/{duplicate}/experience", follow_redirects=True)
    assert followed.status_code == 200 and followed.json()["customer"]["id"] == str(survivor)


async def test_after_a_merge_the_duplicates_email_and_id_lead_to_the_survivor(
    client: httpx.AsyncClient, make: Any, apply: Any
) -> None:
    survey = await make.survey("nps")
    survivor = await make.customer(email="grace@example.com")
    duplicate = await make.customer(email="hopper@example.com")
    await apply(merged(survivor, duplicate, email="grace@example.com"))
    # A late snapshot of the duplicate does not bring it back.
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(duplicate, 9, email="hopper@example.com"))))

    by_id = await make.invitation(survey["id"], customer_id=str(duplicate))
    by_old_email = await make.invitation(survey["id"], email="hopper@example.com")
    answer = await make.answer(survey["id"], {"nps": 8}, customer_id=str(duplicate))
    assert by_id["customer_id"] == str(survivor) and answer["customer_id"] == str(survivor)
    assert by_old_email["customer_id"] is None  # the address left with the duplicate


async def test_a_chain_of_merges_points_at_the_last_survivor(client: httpx.AsyncClient, make: Any, apply: Any) -> None:
    first, second, third = [await make.customer() for _ in range(3)]
    await apply(merged(second, first))
    await apply(merged(third, second))
    r = await client.get(f"/v1/customers/{first}/experience")
    assert r.status_code == 308 and r.json()["merged_into"] == str(third)


@pytest.mark.parametrize("replaying", [False, True], ids=["live", "replay"])
async def test_a_chain_of_merges_applied_out_of_order_points_at_the_last_survivor(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, cem_app: FastAPI, replaying: bool
) -> None:
    """customer.merged is keyed by the survivor, so second->third may be applied before first->second:
    the first still points at the third, with its rows, not at the second (a pointer itself)."""
    first, second, third = [await make.customer() for _ in range(3)]
    await apply(interaction(first), interaction(second))
    handlers = crm_customers.projection_handlers(cem_app.state.customer_data) if replaying else None
    for event in (merged(third, second), merged(second, first)):
        if handlers is None:
            await apply(event)
        else:
            async with session_factory() as session, session.begin():
                await handlers["customer.merged"](session, [event])

    async with session_factory() as session:
        pointers = {r[0]: r[1] for r in (await session.execute(select(CustomerProfile.id, CustomerProfile.merged_into))).all()}
    assert (pointers[first], pointers[second], pointers[third]) == (third, third, None)
    assert await count(session_factory, TouchpointInteraction, TouchpointInteraction.customer_id == third) == 2
    r = await client.get(f"/v1/customers/{first}/experience")
    assert r.status_code == 308 and r.json()["merged_into"] == str(third)
    assert len((await client.get(f"/v1/customers/{third}/experience")).json()["touchpoint_history"]) == 2


async def test_a_merge_applied_before_the_duplicates_creation_takes_what_was_kept_under_its_address(
    client: httpx.AsyncClient, make: Any, apply: Any, cem_database_url: str
) -> None:
    """The merge makes the duplicate a bare pointer; its customer.created, applied after, still
    records its address and hands what was kept under it to the survivor, so that erasing the
    survivor (and the duplicate, as the CRM does) leaves nothing of it."""
    marker = uuid.uuid4().hex[:10]
    survivor, duplicate = await make.customer(email=f"b-{marker}@example.com"), uuid.uuid4()
    address = f"a-{marker}@example.com"
    r = await client.post("/v1/feedback", json={"email": address.upper(), "channel": "email", "text": f"Before {marker}"})
    assert r.status_code == 201 and r.json()["customer_id"] is None
    await apply(interaction(customer_email=address, summary=f"Walked in {marker}"))

    await apply(merged(survivor, duplicate, email=f"b-{marker}@example.com"))
    await apply(delivery("customer.created", CustomerCreated(**snapshot(duplicate, email=address))))
    view = (await client.get(f"/v1/customers/{survivor}/experience")).json()
    assert view["summary"]["feedback"] == 1 and len(view["touchpoint_history"]) == 1
    # The address left with the duplicate: what comes under it now is kept under it, as after any merge.
    await client.post("/v1/feedback", json={"email": address, "channel": "email", "text": f"After {marker}"})

    await apply(erased(survivor), erased(duplicate))
    assert await personal_data_left(cem_database_url, marker) == []


async def test_erasure_leaves_no_personal_data_and_keeps_the_anonymous_scores(
    client: httpx.AsyncClient, make: Any, apply: Any, cem_database_url: str, cem_settings: Any, session_factory: Any
) -> None:
    marker = uuid.uuid4().hex[:10]
    await make.touchpoint("checkout")
    survey = await make.survey("nps", touchpoint="checkout")
    await make.survey("csat", trigger={"interaction_type": "purchase", "delay_minutes": 60})
    customer = await make.customer(
        email=f"erin-{marker}@example.com", name=f"Erin {marker}", phone=f"+31 {marker}", company=f"BV {marker}", tags=[marker]
    )
    email = f"erin-{marker}@example.com"
    answer = await client.post(
        "/v1/responses",
        headers={"Idempotency-Key": f"k-{marker}"},
        json={"survey_id": survey["id"], "customer_id": str(customer), "answers": {"nps": 4, "reason": f"Late {marker}"}},
    )
    assert answer.status_code == 201
    await client.post("/v1/feedback", json={"customer_id": str(customer), "channel": "chat", "text": f"Feedback {marker}"})
    await client.post("/v1/feedback", json={"email": email.upper(), "channel": "email", "text": f"Before {marker}"})
    asked = await make.invitation(survey["id"], email=email)
    no_fatigue = cem_settings.model_copy(update={"fatigue_days": 0})
    await apply(interaction(customer, summary=f"Called {marker}", metadata={"note": marker}), settings=no_fatigue)
    await apply(interaction(customer), settings=no_fatigue)  # throttled: a suppression
    await apply(interaction(customer_email=email, type="call", summary=f"Walked in {marker}"))
    assert (await client.post(f"/r/{asked['token']}/unsubscribe")).status_code == 200  # an opt-out, kept as a hash
    nps_before = (await client.get("/v1/analytics/nps")).json()
    spread = set(await personal_data_left(cem_database_url, marker))
    assert {
        "customer_profiles.name",
        "responses.answers",
        "feedback.text",
        "invitations.email",
        "touchpoint_interactions.summary",
        "touchpoint_interactions.metadata",
        "outbox.value",
        "idempotency_keys.response_body",
    } <= spread, spread

    await apply(erased(customer))
    await apply(erased(customer))  # idempotent
    kept = await rows_by_table(session_factory, customer)
    assert all(kept.values()), kept  # every registered domain had rows of theirs to erase, and kept them

    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    person = view["customer"]
    assert (person["email"], person["name"], person["company"], person["tags"]) == (None, None, None, [])
    assert person["erased_at"] is not None
    assert view["summary"]["responses"] == 1 and view["summary"]["feedback"] == 2
    assert (await client.get("/v1/analytics/nps")).json() == nps_before
    assert {i["status"] for i in view["invitations"] if i["origin"] == "trigger"} == {"cancelled"}
    assert await personal_data_left(cem_database_url, marker) == []
    # Anything that arrives later for them comes without personal data, and they are not invited.
    await client.post("/v1/feedback", json={"customer_id": str(customer), "channel": "chat", "text": f"Later {marker}"})
    r = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})
    assert r.status_code == 409 and "erased" in r.json()["detail"]
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 99, name=f"Erin {marker}"))))
    await apply(interaction(customer, summary=f"Again {marker}"))
    later = await client.post(
        "/v1/responses",
        json={"survey_id": survey["id"], "customer_id": str(customer), "answers": {"nps": 2, "reason": f"Bad {marker}"}},
    )
    assert later.status_code == 201 and not later.json()["followup_requested"]
    assert await personal_data_left(cem_database_url, marker) == []
    assert (await client.get(f"/v1/customers/{customer}/experience")).json()["summary"]["responses"] == 2


async def test_erasure_forgets_the_saved_answer_of_feedback_given_by_address_before_the_crm_announced_them(
    client: httpx.AsyncClient, make: Any, apply: Any, cem_database_url: str
) -> None:
    """Such an answer names no customer, and the address in the case the client wrote it: it is
    found by the id of the feedback, now the customer's."""
    marker = uuid.uuid4().hex[:10]
    email = f"erin-{marker}@example.com"
    body = {"email": email.upper(), "channel": "email", "text": f"Before {marker}"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/feedback", headers=key, json=body)
    assert first.status_code == 201 and first.json()["customer_id"] is None
    customer = await make.customer(email=email)
    await apply(erased(customer))

    assert await personal_data_left(cem_database_url, marker) == []
    again = await client.post("/v1/feedback", headers=key, json=body)
    assert again.json()["id"] != first.json()["id"]  # the first answer is not replayed: it is gone


async def personal_data_left(database_url: str, needle: str) -> list[str]:
    """Every table.column of the database whose text (JSON and bytes decoded) holds `needle`."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'jsonb', 'json', 'bytea')"
        )
        hits = []
        for col in columns:
            name = col["column_name"]
            expr = f"convert_from(\"{name}\", 'UTF8')" if col["data_type"] == "bytea" else f'"{name}"::text'
            if await conn.fetchval(f'SELECT count(*) FROM "{col["table_name"]}" WHERE {expr} LIKE $1', f"%{needle}%"):
                hits.append(f"{col['table_name']}.{name}")
        return hits
    finally:
        await conn.close()


async def test_erasure_blanks_the_personal_fields_of_outbox_events_but_keeps_them(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any
) -> None:
    survey = await make.survey("nps")
    customer = await make.customer()
    await make.answer(survey["id"], {"nps": 2, "reason": "Slow"}, customer_id=str(customer))
    await apply(erased(customer))
    submitted = await outbox("survey.response.submitted")
    requested = await outbox("followup.requested")
    assert [(e["data"]["score"], e["data"]["comment"]) for e in submitted] == [(2, None)]
    assert [e["data"]["comment"] for e in requested] == [None]


async def test_erasure_scrubs_the_address_from_events_about_it_from_before_the_crm_announced_it(
    client: httpx.AsyncClient, make: Any, apply: Any, cem_database_url: str, session_factory: Any, outbox: Any
) -> None:
    marker = uuid.uuid4().hex[:10]
    email = f"walk-in-{marker}@example.com"
    await make.touchpoint("checkout")
    await make.survey("nps", touchpoint="checkout", trigger={"interaction_type": "purchase", "throttle_days": 30})
    await apply(interaction(customer_email=email))  # invited by address
    await apply(interaction(customer_email=email))  # throttled by address: a suppression
    (invited,) = await outbox("survey.invited")
    (throttled,) = await outbox("survey.throttled")
    assert (invited["data"]["email"], throttled["data"]["email"]) == (email, email)
    async with session_factory() as session, session.begin():  # relayed already: sent rows are scrubbed too
        await session.execute(update(OutboxMessage).values(sent_at=NOW))

    customer = await make.customer(email=email)  # links what was kept under the address
    await apply(erased(customer))

    assert [e["type"] for e in await outbox() if marker in orjson.dumps(e).decode()] == []
    assert await personal_data_left(cem_database_url, marker) == []
    assert [e["data"]["reason"] for e in await outbox("survey.throttled")] == ["survey_throttle"]
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert view["summary"]["suppressions"] == 1 and len(view["invitations"]) == 1  # still counted, anonymously


async def test_deal_values_move_only_forward_in_crm_time(client: httpx.AsyncClient, make: Any, apply: Any) -> None:
    customer = await make.customer()  # announced now with no open deals
    t0 = dt.datetime.now(dt.UTC)

    async def open_value() -> str:
        return str((await client.get(f"/v1/customers/{customer}/experience")).json()["customer"]["open_deal_value"])

    await apply(deal(customer, "5000.00", t0 + dt.timedelta(hours=2)), deal(customer, "1200.00", t0 + dt.timedelta(hours=1)))
    assert await open_value() == "5000.00"
    await apply(deal(customer, "900.00", t0 + dt.timedelta(minutes=30)))  # late and older
    assert await open_value() == "5000.00"
    # A newer snapshot carries the CRM's current sum too; an older one does not.
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 2, open_deal_value="10", updated_at=t0))))
    assert await open_value() == "5000.00"
    newer = snapshot(customer, 3, open_deal_value="7000.00", updated_at=t0 + dt.timedelta(hours=3))
    await apply(delivery("customer.updated", CustomerUpdated(**newer)))
    assert await open_value() == "7000.00"
    await apply(deal(customer, "0", t0 + dt.timedelta(hours=4)))
    assert await open_value() == "0.00"


async def test_an_open_deal_value_past_one_deals_bound_is_kept(client: httpx.AsyncClient, make: Any, apply: Any) -> None:
    """Each deal is below 10^16, the sum of a customer's open deals need not be: both a deal
    event's sum and a snapshot's are stored as they are (not a handler failure, a dead letter)."""
    customer = await make.customer()
    t0 = dt.datetime.now(dt.UTC)
    await apply(deal(customer, "18000000000000000.00", t0 + dt.timedelta(hours=1)))
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()["customer"]
    assert view["open_deal_value"] == "18000000000000000.00"
    newer = snapshot(customer, 2, open_deal_value="27000000000000000.50", updated_at=t0 + dt.timedelta(hours=2))
    await apply(delivery("customer.updated", CustomerUpdated(**newer)))
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()["customer"]
    assert view["open_deal_value"] == "27000000000000000.50"


async def test_lead_conversion_shows_in_the_experience_view(client: httpx.AsyncClient, make: Any, apply: Any) -> None:
    customer = await make.customer()
    lead, deal_id = uuid.uuid4(), uuid.uuid4()
    event = delivery("lead.converted", LeadConverted(lead_id=lead, customer_id=customer, deal_id=deal_id))
    await apply(event)
    await apply(event)
    converted = (await client.get(f"/v1/customers/{customer}/experience")).json()["customer"]["converted_from"]
    assert converted["lead_id"] == str(lead) and converted["deal_id"] == str(deal_id)
    assert dt.datetime.fromisoformat(converted["converted_at"]) == event.event.time


async def test_completed_followup_task_closes_the_followup_once(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    survey = await make.survey("csat")
    customer = await make.customer()
    await make.answer(survey["id"], {"csat": 1}, customer_id=str(customer))
    async with session_factory() as session:
        followup = (await session.scalars(select(Followup))).one()
    await apply(task_done(customer, uuid.uuid4()), task_done(customer, "not-an-id"), task_done(customer, followup.id, "manual"))
    assert (await client.get(f"/v1/customers/{customer}/experience")).json()["summary"]["open_followups"] == 1

    first = task_done(customer, followup.id)
    await apply(first)
    await apply(task_done(customer, followup.id))  # completed again after a reopen: the first closing stays
    view = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert view["summary"]["open_followups"] == 0
    (closed,) = view["followups"]
    assert closed["status"] == "closed" and closed["closed_by"] == "kim@ourco.example"
    assert closed["task_id"] == str(first.payload.task_id)


async def test_the_crms_cem_prefixed_origin_closes_followups_too(make: Any, apply: Any, session_factory: Any) -> None:
    survey = await make.survey("ces")
    customer = await make.customer()
    await make.answer(survey["id"], {"ces": 2}, customer_id=str(customer))
    async with session_factory() as session:
        followup = (await session.scalars(select(Followup))).one()
    await apply(task_done(customer, followup.id, "cem.followup"))
    async with session_factory() as session:
        assert (await session.scalars(select(Followup.status))).one() == "closed"


async def test_a_late_older_snapshot_never_overwrites_and_opt_out_stops_invitations(
    client: httpx.AsyncClient, make: Any, apply: Any
) -> None:
    customer = uuid.uuid4()
    await apply(
        delivery("customer.updated", CustomerUpdated(**snapshot(customer, 3, name="New", survey_opt_out=True))),
        delivery("customer.created", CustomerUpdated(**snapshot(customer, 1, name="Old"))),
    )
    person = (await client.get(f"/v1/customers/{customer}/experience")).json()["customer"]
    assert person["name"] == "New" and person["survey_opt_out"] is True and person["crm_version"] == 3
    survey = await make.survey("nps")
    r = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})
    assert r.status_code == 409


async def test_experience_needs_a_key_and_the_erasure_event_has_no_stub_leak(
    client: httpx.AsyncClient, keys: dict[str, str], apply: Any
) -> None:
    stranger = uuid.uuid4()
    await apply(erased(stranger))  # never announced here: a bare erased record stays
    r = await client.get(f"/v1/customers/{stranger}/experience", headers=bearer(keys["read"]))
    assert r.status_code == 200 and r.json()["customer"]["erased_at"] is not None
    assert orjson.loads(r.content)["customer"]["email"] is None
