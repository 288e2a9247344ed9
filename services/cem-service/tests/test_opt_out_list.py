"""`GET /v1/opt-outs`: who asked from a survey link for no more surveys, newest first, found by
address (through its hash: the address is not kept), customer, survey and time; gone from the
list once the recipient undoes it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from cem.suppressions.models import OptOut
from cxkit import testing


async def unsubscribe(client: httpx.AsyncClient, invitation: dict[str, Any]) -> None:
    r = await client.post(f"/r/{invitation['token']}/unsubscribe")
    assert r.status_code == 200, r.text


async def listed(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/opt-outs", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_opt_outs_are_listed_newest_first_and_found_by_address_customer_survey_and_time(
    client: httpx.AsyncClient, make: Any, session_factory: Any, keys: dict[str, str]
) -> None:
    nps, csat = await make.survey("nps"), await make.survey("csat")
    ada = await make.customer(email="Ada@Example.com")
    no_address = await make.customer(email=None)
    stays = await make.customer(email="stays@example.com")
    by_ada = await make.invitation(nps["id"], customer_id=str(ada))
    by_guest = await make.invitation(csat["id"], email="Guest@Example.org")
    by_no_address = await make.invitation(nps["id"], customer_id=str(no_address))
    await make.invitation(nps["id"], customer_id=str(stays))
    for invitation in (by_ada, by_guest, by_no_address):
        await unsubscribe(client, invitation)
    # Spread them over three days, so the order and the window are the rows' own.
    base = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
    async with session_factory() as session:
        for days, invitation in enumerate((by_ada, by_guest, by_no_address)):
            await session.execute(
                update(OptOut)
                .where(OptOut.invitation_id == uuid.UUID(invitation["id"]))
                .values(created_at=base + dt.timedelta(days=days))
            )
        await session.commit()

    everything = await listed(client)
    assert [o["invitation_id"] for o in everything] == [by_no_address["id"], by_guest["id"], by_ada["id"]]
    first = everything[-1]
    assert first == {
        "id": first["id"],
        "customer_id": str(ada),
        "survey_id": nps["id"],
        "invitation_id": by_ada["id"],
        "covers_address": True,
        "created_at": "2026-11-01T09:00:00Z",
    }
    assert everything[1]["customer_id"] is None and everything[1]["covers_address"] is True  # a bare address
    assert everything[0]["customer_id"] == str(no_address) and everything[0]["covers_address"] is False
    assert "email" not in first and not any("example" in str(v).lower() for o in everything for v in o.values())

    # An address is found whatever its case; one that did not opt out is not there.
    assert [o["invitation_id"] for o in await listed(client, email="ada@EXAMPLE.com")] == [by_ada["id"]]
    assert [o["invitation_id"] for o in await listed(client, email="guest@example.org")] == [by_guest["id"]]
    assert await listed(client, email="stays@example.com") == []
    assert [o["invitation_id"] for o in await listed(client, customer_id=str(no_address))] == [by_no_address["id"]]
    assert await listed(client, customer_id=str(stays)) == []
    assert [o["invitation_id"] for o in await listed(client, survey_id=csat["id"])] == [by_guest["id"]]
    assert [o["invitation_id"] for o in await listed(client, survey_id=nps["id"])] == [by_no_address["id"], by_ada["id"]]
    window = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T09:00:00Z"}  # to is exclusive
    assert [o["invitation_id"] for o in await listed(client, **window)] == [by_guest["id"]]

    # Pages of one, through the cursor, give the same rows in the same order, and then stop.
    paged, cursor = [], None
    while True:
        r = await client.get("/v1/opt-outs", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        paged += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert paged == everything

    # A `read` key may list them; no key may not.
    read = await client.get("/v1/opt-outs", headers=testing.bearer(keys["read"]))
    assert read.status_code == 200 and len(read.json()["items"]) == 3
    assert (await client.get("/v1/opt-outs", headers={"Authorization": ""})).status_code == 401


async def test_an_opt_out_the_recipient_undid_is_no_longer_listed(client: httpx.AsyncClient, make: Any) -> None:
    nps = await make.survey("nps")
    invitation = await make.invitation(nps["id"], email="back@example.com")
    await unsubscribe(client, invitation)
    assert len(await listed(client, email="back@example.com")) == 1
    assert (await client.post(f"/r/{invitation['token']}/resubscribe")).status_code == 200
    assert await listed(client, email="back@example.com") == []
    assert await listed(client) == []


async def test_a_bad_filter_is_a_422_problem(client: httpx.AsyncClient) -> None:
    for params in (
        {"email": "not-an-address"},
        {"customer_id": "42"},
        {"from": "2026-11-03T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"cursor": "garbage"},
        {"limit": 0},
    ):
        r = await client.get("/v1/opt-outs", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), params


async def test_the_suppression_report_counts_the_opt_outs_with_its_filters_and_the_dashboard_says_it(
    client: httpx.AsyncClient, make: Any, session_factory: Any, keys: dict[str, str], cem_app: FastAPI
) -> None:
    await make.touchpoint("checkout")
    nps, csat = await make.survey("nps"), await make.survey("csat")
    at_checkout = await make.invitation(nps["id"], email="a@example.com", touchpoint="checkout")
    elsewhere = await make.invitation(nps["id"], email="b@example.com")
    other_survey = await make.invitation(csat["id"], email="c@example.com", touchpoint="checkout")
    undone = await make.invitation(nps["id"], email="d@example.com", touchpoint="checkout")
    for invitation in (at_checkout, elsewhere, other_survey, undone):
        await unsubscribe(client, invitation)
    assert (await client.post(f"/r/{undone['token']}/resubscribe")).status_code == 200
    async with session_factory() as session:
        await session.execute(
            update(OptOut)
            .where(OptOut.invitation_id == uuid.UUID(elsewhere["id"]))
            .values(created_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
        )
        await session.commit()

    async def opt_outs(**params: Any) -> int:
        r = await client.get("/v1/analytics/suppressions", params=params)
        assert r.status_code == 200, r.text
        return int(r.json()["opt_outs"])

    assert await opt_outs() == 3
    assert await opt_outs(survey_id=nps["id"]) == 2
    assert await opt_outs(touchpoint="checkout") == 2
    assert await opt_outs(survey_id=nps["id"], touchpoint="checkout") == 1
    assert await opt_outs(**{"from": "2026-12-01T00:00:00Z"}) == 2
    assert await opt_outs(**{"to": "2026-11-02T00:00:00Z"}) == 1

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cem_app), base_url="http://cem") as browser:
        await testing.dashboard_sign_in(browser, keys["read"])
        page = await browser.get("/dashboard")
    assert page.status_code == 200 and "3 recipients opted out of surveys from a link in it" in page.text
