"""Leads: capture, qualify, convert into a customer and a deal in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select, text

from crm.customers import service as customers
from crm.customers.models import Customer
from crm.deals.models import Deal


async def test_lead_crud_with_status_score_and_if_match(client: httpx.AsyncClient, make: Any) -> None:
    lead = await make.lead(name="Grace", score=40)
    assert lead["status"] == "new" and lead["score"] == 40 and lead["version"] == 1
    path = f"/v1/leads/{lead['id']}"
    r = await client.patch(path, json={"status": "working", "score": 70}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["status"] == "working"
    assert (await client.patch(path, json={"score": 80}, headers={"If-Match": '"1"'})).status_code == 412
    for bad in ({"score": 101}, {"score": -1}, {"status": "won"}, {"status": None}, {"id": str(uuid.uuid4())}):
        assert (await client.patch(path, json=bad)).status_code == 422, bad
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).status_code == 404


async def test_a_lead_needs_an_email_or_a_name_and_an_existing_campaign(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/leads", json={"company": "Acme"})).status_code == 422
    assert (await client.post("/v1/leads", json={"name": "N", "campaign_id": str(uuid.uuid4())})).status_code == 422
    assert (await client.post("/v1/leads", json={"name": "N"})).status_code == 201


async def test_list_filters_and_sorts_leads_by_score(client: httpx.AsyncClient, make: Any) -> None:
    cold = await make.lead(score=10, company="Acme")
    hot = await make.lead(score=90, company="Acme")
    await make.lead(score=50, status="disqualified")
    items = (await client.get("/v1/leads", params={"sort": "-score", "q": "acme"})).json()["items"]
    assert [i["id"] for i in items] == [hot["id"], cold["id"]]
    assert len((await client.get("/v1/leads", params={"status": "disqualified"})).json()["items"]) == 1


async def test_convert_makes_a_customer_and_a_deal_and_announces_it(client: httpx.AsyncClient, make: Any, events: Any) -> None:
    campaign = await make.campaign()
    lead = await make.lead(
        name="Grace Hopper", company="Navy", phone="+1 5", owner="sam", source="webinar", campaign_id=campaign["id"]
    )
    r = await client.post(
        f"/v1/leads/{lead['id']}/convert", json={"deal": {"title": "Pilot", "amount": "9000.00", "stage": "Needs analysis"}}
    )
    assert r.status_code == 200, r.text
    result = r.json()
    customer, deal = result["customer"], result["deal"]
    assert result["customer_created"] is True
    assert (customer["email"], customer["name"], customer["company"], customer["owner"]) == (
        lead["email"],
        "Grace Hopper",
        "Navy",
        "sam",
    )
    assert customer["lifecycle_stage"] == "opportunity" and customer["campaign_id"] == campaign["id"]
    assert deal["customer_id"] == customer["id"] and deal["stage"] == "Needs analysis" and deal["owner"] == "sam"
    converted = result["lead"]
    assert converted["status"] == "qualified" and converted["converted_customer_id"] == customer["id"]
    assert converted["converted_deal_id"] == deal["id"] and converted["converted_at"]

    [announced] = await events("lead.converted")
    assert announced["subject"] == customer["id"] and announced["_topic"] == "crm.customers.v1"
    assert announced["data"] == {
        "lead_id": lead["id"],
        "customer_id": customer["id"],
        "deal_id": deal["id"],
        "campaign_id": campaign["id"],
    }
    assert [e["subject"] for e in await events("customer.created")] == [customer["id"]]
    assert [e["data"]["to_stage"] for e in await events("deal.stage_changed")] == ["Needs analysis"]

    again = await client.post(f"/v1/leads/{lead['id']}/convert", json={})
    assert again.status_code == 409 and again.json()["converted_customer_id"] == customer["id"]
    assert (await client.patch(f"/v1/leads/{lead['id']}", json={"score": 1})).status_code == 409


async def test_convert_links_the_customer_with_the_same_email_and_fills_only_empty_fields(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    existing = await make.customer(email="known@example.com", name="Known", company=None, lifecycle_stage="lead")
    lead = await make.lead(email="KNOWN@example.com", name="Other Name", company="Acme")
    result = (await client.post(f"/v1/leads/{lead['id']}/convert", json={})).json()
    assert result["customer_created"] is False and result["deal"] is None
    customer = result["customer"]
    assert customer["id"] == existing["id"] and customer["name"] == "Known" and customer["company"] == "Acme"
    assert customer["lifecycle_stage"] == "sql"
    changed = [e["data"]["changed"] for e in await events("customer.updated")]
    assert ["company"] in changed and ["lifecycle_stage"] in changed


async def test_convert_into_a_given_customer_never_moves_its_lifecycle_back(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer(lifecycle_stage="evangelist")
    lead = await make.lead()
    result = (await client.post(f"/v1/leads/{lead['id']}/convert", json={"customer_id": customer["id"]})).json()
    assert result["customer"]["id"] == customer["id"] and result["customer"]["lifecycle_stage"] == "evangelist"


async def test_convert_into_a_given_customer_never_moves_it_to_churned(client: httpx.AsyncClient, make: Any) -> None:
    """`churned` is not a step forward: asked for on an existing customer, the stage stays (a
    500 until the Schemathesis run with existing customer ids found it); a new one takes it."""
    customer = await make.customer(lifecycle_stage="sql")
    converted = await client.post(
        f"/v1/leads/{(await make.lead())['id']}/convert", json={"customer_id": customer["id"], "lifecycle_stage": "churned"}
    )
    assert converted.status_code == 200, converted.text
    assert converted.json()["customer"]["lifecycle_stage"] == "sql" and converted.json()["customer_created"] is False
    assert (await client.get(f"/v1/customers/{customer['id']}")).json()["lifecycle_stage"] == "sql"
    lead = await make.lead(email="gone@example.com")
    new = (await client.post(f"/v1/leads/{lead['id']}/convert", json={"lifecycle_stage": "churned"})).json()
    assert new["customer_created"] is True and new["customer"]["lifecycle_stage"] == "churned"


async def test_convert_is_one_transaction_a_bad_deal_leaves_nothing_behind(
    client: httpx.AsyncClient, make: Any, session_factory: Any, events: Any
) -> None:
    lead = await make.lead()
    r = await client.post(f"/v1/leads/{lead['id']}/convert", json={"deal": {"title": "X", "stage": "No such stage"}})
    assert r.status_code == 422
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 0
        assert await session.scalar(select(func.count()).select_from(Deal)) == 0
    assert (await client.get(f"/v1/leads/{lead['id']}")).json()["converted_at"] is None
    assert await events("customer.created") == [] and await events("lead.converted") == []


async def test_convert_refuses_disqualified_leads_unknown_customers_and_unknown_leads(
    client: httpx.AsyncClient, make: Any
) -> None:
    dq = await make.lead(status="disqualified", disqualified_reason="no budget")
    assert (await client.post(f"/v1/leads/{dq['id']}/convert", json={})).status_code == 409
    lead = await make.lead()
    assert (await client.post(f"/v1/leads/{lead['id']}/convert", json={"customer_id": str(uuid.uuid4())})).status_code == 422
    assert (await client.post(f"/v1/leads/{uuid.uuid4()}/convert", json={})).status_code == 404


async def test_convert_of_a_nameless_lead_makes_a_nameless_customer_even_with_a_long_email(
    client: httpx.AsyncClient, events: Any
) -> None:
    """customers.name holds 200 characters, an email up to 254: the email is not a name (a 500
    when it was copied there); like a customer made from an interaction, the customer has none."""
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 10 + ".com"
    created = await client.post("/v1/leads", json={"email": email})
    assert created.status_code == 201, created.text
    converted = await client.post(f"/v1/leads/{created.json()['id']}/convert", json={})
    assert converted.status_code == 200, converted.text
    customer = converted.json()["customer"]
    assert converted.json()["customer_created"] is True
    assert (customer["email"], customer["name"]) == (email, None)
    [announced] = await events("customer.created")
    assert announced["data"]["name"] is None


async def test_convert_racing_a_customer_made_with_the_same_email_links_to_that_customer(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    """The convert finds no customer, inserts one, and waits on the unique email index for the
    other writer; when that one commits, the convert links to its customer (was a 409)."""
    lead = await make.lead(email="x@example.com", company="Acme")
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")

    async def convert_waits() -> bool:
        async with session_factory() as watcher:  # a new transaction: pg_stat_activity is read once per one
            return bool(await watcher.scalar(waiting))

    async with session_factory() as other:
        winner = await customers.insert_customer(other, email="X@example.com", name="Winner")
        converting = asyncio.create_task(client.post(f"/v1/leads/{lead['id']}/convert", json={}))
        deadline = asyncio.get_running_loop().time() + 10
        while not await convert_waits():
            assert not converting.done(), converting.result().text
            assert asyncio.get_running_loop().time() < deadline, "the convert never waited on the index"
            await asyncio.sleep(0.01)
        await other.commit()
        converted = await converting
    assert converted.status_code == 200, converted.text
    result = converted.json()
    assert result["customer_created"] is False and result["customer"]["id"] == str(winner.id)
    assert (result["customer"]["name"], result["customer"]["company"]) == ("Winner", "Acme")
    assert result["customer"]["lifecycle_stage"] == "sql"
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1


async def test_convert_with_a_deal_keeps_the_lifecycle_stage_the_caller_asked_for(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    """An explicit `lifecycle_stage` wins over the deal's `opportunity` (a new customer was made
    at `sql` and then moved to `opportunity` by its deal, with a second event)."""
    lead = await make.lead()
    r = await client.post(f"/v1/leads/{lead['id']}/convert", json={"lifecycle_stage": "sql", "deal": {"title": "X"}})
    assert r.status_code == 200, r.text
    customer = r.json()["customer"]
    assert customer["lifecycle_stage"] == "sql" and r.json()["deal"]["status"] == "open"
    assert (await client.get(f"/v1/customers/{customer['id']}")).json()["lifecycle_stage"] == "sql"
    assert [e["data"]["lifecycle_stage"] for e in await events("customer.created")] == ["sql"]
    assert await events("customer.updated") == []

    # A linked customer moves forward to the stage asked for, not past it, and never back.
    existing = await make.customer(email="known@example.com", lifecycle_stage="lead")
    lead = await make.lead(email="known@example.com")
    r = await client.post(f"/v1/leads/{lead['id']}/convert", json={"lifecycle_stage": "mql", "deal": {"title": "Y"}})
    assert r.status_code == 200, r.text
    assert r.json()["customer"]["id"] == existing["id"] and r.json()["customer"]["lifecycle_stage"] == "mql"
    stages = [e["data"]["lifecycle_stage"] for e in await events("customer.updated") if "lifecycle_stage" in e["data"]["changed"]]
    assert stages == ["mql"]
    ahead = await make.customer(lifecycle_stage="customer")
    r = await client.post(
        f"/v1/leads/{(await make.lead())['id']}/convert",
        json={"customer_id": ahead["id"], "lifecycle_stage": "sql", "deal": {"title": "Z"}},
    )
    assert r.status_code == 200 and r.json()["customer"]["lifecycle_stage"] == "customer"

    # Without one, the deal decides: `opportunity`.
    lead = await make.lead()
    r = await client.post(f"/v1/leads/{lead['id']}/convert", json={"deal": {"title": "W"}})
    assert r.json()["customer"]["lifecycle_stage"] == "opportunity"


async def test_convert_can_open_a_lost_deal_with_its_reason_and_names_deal_fields_at_fault(
    client: httpx.AsyncClient, make: Any
) -> None:
    lead = await make.lead()
    path = f"/v1/leads/{lead['id']}/convert"
    missing = await client.post(path, json={"deal": {"title": "X", "stage": "Closed lost"}})
    assert missing.status_code == 422
    assert [e["loc"] for e in missing.json()["errors"]] == [["body", "deal", "lost_reason"]]
    assert missing.json()["detail"].startswith("body.deal.lost_reason: ")
    unknown = await client.post(path, json={"deal": {"title": "X", "stage": "No such stage"}})
    assert unknown.status_code == 422
    assert [e["loc"] for e in unknown.json()["errors"]] == [["body", "deal", "stage"]]
    assert unknown.json()["detail"].startswith("body.deal.stage: ")
    no_pipeline = await client.post(path, json={"deal": {"title": "X", "pipeline_id": str(uuid.uuid4())}})
    assert no_pipeline.status_code == 422
    assert [e["loc"] for e in no_pipeline.json()["errors"]] == [["body", "deal", "pipeline_id"]]

    lost = await client.post(path, json={"deal": {"title": "X", "stage": "Closed lost", "lost_reason": "No budget"}})
    assert lost.status_code == 200, lost.text
    deal = lost.json()["deal"]
    assert (deal["status"], deal["stage"], deal["lost_reason"]) == ("lost", "Closed lost", "No budget")
    assert lost.json()["lead"]["converted_deal_id"] == deal["id"]
