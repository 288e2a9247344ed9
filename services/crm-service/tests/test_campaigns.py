"""Campaigns: members (customers and leads), responses, response rate, attribution."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from crm.campaigns.models import Campaign, CampaignMember

from .customer_races import erase, merge, sent_during


async def test_members_responses_and_response_rate(client: httpx.AsyncClient, make: Any) -> None:
    campaign = await make.campaign(kind="webinar", status="active", budget="5000.00", currency="EUR")
    assert campaign["stats"] == {
        "members": 0,
        "responded": 0,
        "response_rate": None,
        "leads": 0,
        "customers": 0,
        "won_amount": "0.00",
    }
    members = []
    for _ in range(4):
        customer = await make.customer()
        r = await client.post(f"/v1/campaigns/{campaign['id']}/members", json={"customer_id": customer["id"]})
        assert r.status_code == 201 and r.json()["responded"] is False
        members.append(r.json())
    lead = await make.lead()
    lead_member = (
        await client.post(f"/v1/campaigns/{campaign['id']}/members", json={"lead_id": lead["id"], "response": "registered"})
    ).json()
    assert lead_member["responded"] is True and lead_member["response"] == "registered"

    base = f"/v1/campaigns/{campaign['id']}/members"
    first = await client.post(
        f"{base}/{members[0]['id']}/response", json={"response": "clicked", "responded_at": "2026-12-02T10:00:00Z"}
    )
    assert first.status_code == 200 and first.json()["responded_at"] == "2026-12-02T10:00:00Z"
    later = (await client.post(f"{base}/{members[0]['id']}/response", json={"response": "registered"})).json()
    assert later["response"] == "registered" and later["responded_at"] == "2026-12-02T10:00:00Z"

    stats = (await client.get(f"/v1/campaigns/{campaign['id']}")).json()["stats"]
    assert (stats["members"], stats["responded"], stats["response_rate"]) == (5, 2, 0.4)
    responded = (await client.get(base, params={"responded": "true"})).json()["items"]
    assert {m["id"] for m in responded} == {members[0]["id"], lead_member["id"]}

    dup = await client.post(base, json={"customer_id": members[1]["customer_id"]})
    assert dup.status_code == 409
    assert (await client.delete(f"{base}/{members[1]['id']}")).status_code == 204
    assert (await client.get(f"{base}/{members[1]['id']}")).status_code == 404
    assert (await client.get(f"/v1/campaigns/{campaign['id']}")).json()["stats"]["members"] == 4


async def test_member_references_are_checked(client: httpx.AsyncClient, make: Any) -> None:
    campaign = await make.campaign()
    base = f"/v1/campaigns/{campaign['id']}/members"
    customer = await make.customer()
    lead = await make.lead()
    assert (await client.post(base, json={})).status_code == 422
    assert (await client.post(base, json={"customer_id": customer["id"], "lead_id": lead["id"]})).status_code == 422
    assert (await client.post(base, json={"customer_id": str(uuid.uuid4())})).status_code == 422
    assert (await client.post(base, json={"lead_id": str(uuid.uuid4())})).status_code == 422
    assert (await client.post(f"/v1/campaigns/{uuid.uuid4()}/members", json={"customer_id": customer["id"]})).status_code == 404
    assert (await client.post(f"{base}/{uuid.uuid4()}/response", json={"response": "x"})).status_code == 404


async def test_leads_and_customers_remember_their_campaign_and_it_counts_what_they_brought(
    client: httpx.AsyncClient, make: Any
) -> None:
    campaign = await make.campaign()
    lead = await make.lead(campaign_id=campaign["id"])
    customer = await make.customer(campaign_id=campaign["id"])
    assert lead["campaign_id"] == campaign["id"] and customer["campaign_id"] == campaign["id"]
    deal = await make.deal(customer["id"], amount="1500.00")
    await make.move(deal["id"], status="won")
    await make.deal(customer["id"], amount="999.00")  # open: not counted as won

    converted = (await client.post(f"/v1/leads/{lead['id']}/convert", json={})).json()["customer"]
    assert converted["campaign_id"] == campaign["id"]

    stats = (await client.get(f"/v1/campaigns/{campaign['id']}")).json()["stats"]
    # The lead and the customer joined as members that responded; the converted lead's customer too.
    assert stats == {"members": 3, "responded": 3, "response_rate": 1.0, "leads": 1, "customers": 2, "won_amount": "1500.00"}
    by_campaign = (await client.get("/v1/customers", params={"campaign_id": campaign["id"]})).json()["items"]
    assert {c["id"] for c in by_campaign} == {customer["id"], converted["id"]}
    assert [x["id"] for x in (await client.get("/v1/leads", params={"campaign_id": campaign["id"]})).json()["items"]] == [
        lead["id"]
    ]
    listed = (await client.get("/v1/campaigns")).json()["items"]
    assert listed[0]["stats"] == stats

    refused = await client.delete(f"/v1/campaigns/{campaign['id']}")
    assert refused.status_code == 409
    assert (await client.patch(f"/v1/campaigns/{campaign['id']}", json={"status": "aborted"})).json()["status"] == "aborted"


async def test_campaign_rules(client: httpx.AsyncClient, make: Any) -> None:
    campaign = await make.campaign(name="Spring")
    assert (await client.post("/v1/campaigns", json={"name": "SPRING"})).status_code == 409
    assert (
        await client.post("/v1/campaigns", json={"name": "X", "start_date": "2026-02-01", "end_date": "2026-01-01"})
    ).status_code == 422
    assert (await client.post("/v1/campaigns", json={"name": "X", "kind": "billboard"})).status_code == 422
    path = f"/v1/campaigns/{campaign['id']}"
    assert (await client.patch(path, json={"end_date": "2026-01-01", "start_date": "2026-02-01"})).status_code == 422
    assert (await client.patch(path, json={"name": None})).status_code == 422
    assert (await client.patch(path, json={"status": "active"}, headers={"If-Match": '"7"'})).status_code == 412
    unused = await make.campaign()
    await client.post(f"/v1/campaigns/{unused['id']}/members", json={"customer_id": (await make.customer())["id"]})
    assert (await client.delete(f"/v1/campaigns/{unused['id']}")).status_code == 204


@pytest.mark.parametrize(
    "names", [["Spring"] * 6, ["Spring", "SPRING", "spring", "sPRING", "SpRiNg", "spRING"]], ids=["same", "by-case"]
)
async def test_concurrent_creates_of_one_name_make_one_campaign_and_409s_whatever_the_case(
    client: httpx.AsyncClient, session_factory: Any, names: list[str]
) -> None:
    answers = await asyncio.gather(*[client.post("/v1/campaigns", json={"name": name}) for name in names])
    assert {a.status_code for a in answers} == {201, 409}, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.headers["content-type"] == "application/problem+json"
        assert "already exists" in refused.json()["detail"]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Campaign)) == 1


async def test_concurrent_renames_to_one_name_keep_names_unique_whatever_the_case(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    campaigns = [await make.campaign() for _ in range(6)]
    names = ["Autumn", "AUTUMN", "autumn"] * 2
    answers = await asyncio.gather(
        *[client.patch(f"/v1/campaigns/{c['id']}", json={"name": name}) for c, name in zip(campaigns, names, strict=True)]
    )
    assert {a.status_code for a in answers} == {200, 409}, [a.text for a in answers]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).where(func.lower(Campaign.name) == "autumn")) == 1


# --- an erase or a merge of the member meanwhile -------------------------------------------------


async def test_a_member_added_while_the_customer_is_merged_is_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    campaign = await make.campaign()
    survivor, duplicate = await make.customer(), await make.customer()
    base = f"/v1/campaigns/{campaign['id']}/members"
    answer = await sent_during(
        crm_app, merge(crm_app, survivor["id"], duplicate["id"]), lambda: client.post(base, json={"customer_id": duplicate["id"]})
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["customer_id"] == survivor["id"]
    assert [m["customer_id"] for m in (await client.get(base)).json()["items"]] == [survivor["id"]]


async def test_a_member_added_while_merged_into_a_member_is_not_counted_twice(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, session_factory: Any
) -> None:
    campaign = await make.campaign()
    survivor, duplicate = await make.customer(), await make.customer()
    base = f"/v1/campaigns/{campaign['id']}/members"
    assert (await client.post(base, json={"customer_id": survivor["id"]})).status_code == 201
    answer = await sent_during(
        crm_app, merge(crm_app, survivor["id"], duplicate["id"]), lambda: client.post(base, json={"customer_id": duplicate["id"]})
    )
    assert answer.status_code == 409, answer.text
    assert (await client.get(f"/v1/campaigns/{campaign['id']}")).json()["stats"]["members"] == 1
    async with session_factory() as session:
        held = await session.scalars(
            select(CampaignMember.customer_id).where(CampaignMember.campaign_id == uuid.UUID(campaign["id"]))
        )
        assert [str(c) for c in held] == [survivor["id"]]


async def test_a_member_added_while_the_customer_is_erased_is_refused_as_erased(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    campaign = await make.campaign()
    customer = await make.customer()
    base = f"/v1/campaigns/{campaign['id']}/members"
    answer = await sent_during(
        crm_app, erase(crm_app, customer["id"]), lambda: client.post(base, json={"customer_id": customer["id"]})
    )
    assert answer.status_code == 422 and answer.json()["errors"][0]["msg"] == "erased", answer.text
    assert (await client.get(base)).json()["items"] == []
