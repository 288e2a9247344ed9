"""Invitations: unguessable one-time links, only for active surveys, never to customers who opted out."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from typing import Any

import httpx
from sqlalchemy import select

from cem.invitations.models import Invitation


async def test_invitation_for_a_customer_has_a_strong_token_url_expiry_and_event(
    client: httpx.AsyncClient, make: Any, session_factory: Any, outbox: Any, cem_settings: Any
) -> None:
    await make.touchpoint("checkout")
    survey = await make.survey("nps", touchpoint="checkout")
    customer = await make.customer(email="ada@example.com")
    r = await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer), "channel": "email"})
    assert r.status_code == 201, r.text
    inv = r.json()
    assert len(inv["token"]) >= 43  # 32 random bytes, URL-safe base64: 256 bits
    assert inv["url"] == f"{cem_settings.public_base_url}/r/{inv['token']}"
    assert inv["status"] == "sent" and inv["touchpoint"] == "checkout" and inv["channel"] == "email"
    assert inv["customer_id"] == str(customer) and r.headers["location"] == f"/v1/invitations/{inv['id']}"
    async with session_factory() as session:
        row = (await session.scalars(select(Invitation))).one()
    assert row.token_hash == hashlib.sha256(inv["token"].encode()).hexdigest()
    assert inv["token"] not in repr(row.__dict__), "the token itself is never stored"
    days = (row.expires_at - row.created_at).days
    assert days == cem_settings.invitation_ttl_days
    (event,) = await outbox("survey.invited")
    assert event["subject"] == str(customer)
    assert event["data"]["url"] == inv["url"] and event["data"]["email"] == "ada@example.com"
    assert event["data"]["survey_kind"] == "nps" and event["data"]["invitation_id"] == inv["id"]
    got = (await client.get(f"/v1/invitations/{inv['id']}")).json()
    assert "token" not in got and "url" not in got and got["status"] == "sent"


async def test_tokens_are_unique(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("csat")
    customer = str(await make.customer())
    tokens = await asyncio.gather(*[make.invitation(survey["id"], customer_id=customer) for _ in range(10)])
    assert len({t["token"] for t in tokens}) == 10


async def test_invitation_by_email_links_the_customer_case_insensitively(
    client: httpx.AsyncClient, make: Any, outbox: Any
) -> None:
    survey = await make.survey("nps")
    customer = await make.customer(email="Grace.Hopper@Example.com")
    inv = await make.invitation(survey["id"], email="grace.hopper@example.COM", expires_in_days=3)
    assert inv["customer_id"] == str(customer)
    created, expires = (dt.datetime.fromisoformat(inv[k]) for k in ("created_at", "expires_at"))
    assert expires - created == dt.timedelta(days=3)
    stranger = await make.invitation(survey["id"], email="walk-in@example.net")
    assert stranger["customer_id"] is None and stranger["email"] == "walk-in@example.net"
    # Both are announced; the bare address's without a customer (and without a message key).
    announced = {e["data"]["invitation_id"]: e for e in await outbox("survey.invited")}
    assert set(announced) == {inv["id"], stranger["id"]}
    assert announced[inv["id"]]["subject"] == str(customer)
    bare = announced[stranger["id"]]
    assert "subject" not in bare and bare["data"]["customer_id"] is None and bare["data"]["email"] == "walk-in@example.net"


async def test_opted_out_customers_are_never_invited(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    customer = await make.customer(email="no-surveys@example.com", survey_opt_out=True)
    for body in [{"customer_id": str(customer)}, {"email": "NO-SURVEYS@example.com"}]:
        r = await client.post(f"/v1/surveys/{survey['id']}/invitations", json=body)
        assert r.status_code == 409 and "opted out" in r.json()["detail"], body


async def test_invitations_only_for_active_surveys_and_known_customers(client: httpx.AsyncClient, make: Any) -> None:
    draft = await make.survey("nps", status="draft")
    customer = str(await make.customer())
    r = await client.post(f"/v1/surveys/{draft['id']}/invitations", json={"customer_id": customer})
    assert r.status_code == 409 and "draft" in r.json()["detail"]
    closed = await make.survey("nps", status="closed")
    assert (await client.post(f"/v1/surveys/{closed['id']}/invitations", json={"customer_id": customer})).status_code == 409
    active = await make.survey("nps")
    url = f"/v1/surveys/{active['id']}/invitations"
    for body in [
        {"customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10"},  # the CRM never announced it
        {},
        {"customer_id": customer, "email": "a@example.com"},
        {"email": "not-an-email"},
        {"customer_id": "123"},
        {"customer_id": customer, "expires_in_days": 0},
        {"customer_id": customer, "expires_in_days": 10**20},
        {"customer_id": customer, "touchpoint": "nowhere"},
        {"customer_id": customer, "token": "mine"},
    ]:
        r = await client.post(url, json=body)
        assert r.status_code == 422, (body, r.text)
    assert (
        await client.post("/v1/surveys/0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10/invitations", json={"customer_id": customer})
    ).status_code == 404


async def test_list_a_surveys_invitations_by_status(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    sent, opened, answered = [await make.invitation(survey["id"]) for _ in range(3)]
    await client.get(f"/r/{opened['token']}")
    await client.post("/v1/responses", json={"token": answered["token"], "answers": {"nps": 10}})
    url = f"/v1/surveys/{survey['id']}/invitations"

    async def ids(**params: str) -> list[str]:
        return [i["id"] for i in (await client.get(url, params=params)).json()["items"]]

    assert await ids() == [answered["id"], opened["id"], sent["id"]]
    assert await ids(status="sent") == [sent["id"]]
    assert await ids(status="opened") == [opened["id"]]
    assert await ids(status="answered") == [answered["id"]]
    assert await ids(status="expired") == []
    assert await ids(customer_id=sent["customer_id"]) == [sent["id"]]
    page = (await client.get(url, params={"limit": 2})).json()
    rest = (await client.get(url, params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [i["id"] for i in page["items"] + rest["items"]] == [answered["id"], opened["id"], sent["id"]]
    assert (await client.get(url, params={"status": "lost"})).status_code == 422
