"""`GET /v1/followups`: the closed loop's inbox. Every follow-up a detractor answer opened, newest
first or the most urgent first, with its customer and whether it is overdue now, filtered by status, lateness, survey,
customer, touchpoint, metric and time; `GET /v1/followups/{id}` shows one the same way."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from cem.followups.models import Followup
from cem.followups.repository import EXPORT_HEADER
from cxkit import testing
from cxkit.events.payloads import CustomerErased
from cxkit.pg_pool import asyncpg_dsn

from .conftest import delivery
from .test_followup_sla import followup_of
from .test_per_customer_plans import assert_reads_only_what_it_returns, plans
from .test_recovery import close_followup_of


async def listed(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/followups", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def customers_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["customer_id"] for item in items]


async def test_followups_are_listed_newest_first_with_their_customer_and_lateness_and_filtered(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, keys: dict[str, str]
) -> None:
    await make.touchpoint("checkout")
    nps = await make.survey("nps", touchpoint="checkout")
    csat = await make.survey("csat")
    late, closed, fresh, unhappy, promoter = [await make.customer() for _ in range(5)]
    await make.answer(nps["id"], {"nps": 2}, customer_id=str(late))
    await make.answer(nps["id"], {"nps": 5}, customer_id=str(closed))
    await make.answer(nps["id"], {"nps": 6}, customer_id=str(fresh))
    await make.answer(csat["id"], {"csat": 1}, customer_id=str(unhappy))
    await make.answer(nps["id"], {"nps": 10}, customer_id=str(promoter))  # no follow-up
    now = dt.datetime.now(dt.UTC)
    # Opened a day apart, oldest first; `late` is past due, `fresh` is not yet.
    async with session_factory() as session, session.begin():
        for days_ago, customer in zip((4, 3, 2, 1), (late, closed, fresh, unhappy), strict=True):
            opened = now - dt.timedelta(days=days_ago)
            await session.execute(
                update(Followup)
                .where(Followup.customer_id == customer)
                .values(created_at=opened, due_at=opened + dt.timedelta(hours=24 if customer == late else 24 * 30))
            )
    await close_followup_of(session_factory, apply, closed, "nps", 1)  # its due time passed too: closed is not late

    everything = await listed(client)
    assert customers_of(everything) == [str(unhappy), str(fresh), str(closed), str(late)]
    first = everything[-1]
    stored = await followup_of(session_factory, late)
    assert first == {
        "id": str(stored.id),
        "customer_id": str(late),
        "customer_name": "Ada Lovelace",
        "customer_email": f"{late.hex[:8]}@example.com",
        "response_id": str(stored.response_id),
        "survey_id": nps["id"],
        "metric": "nps",
        "score": 2,
        "touchpoint": "checkout",
        "reason": stored.reason,
        "status": "open",
        "created_at": first["created_at"],
        "closed_at": None,
        "closed_by": None,
        "task_id": None,
        "due_at": first["due_at"],
        "overdue_at": None,  # the scheduler has not announced it yet; `overdue` says it already is
        "overdue": True,
    }
    assert dt.datetime.fromisoformat(first["due_at"]) == stored.due_at
    assert [item["overdue"] for item in everything] == [False, False, False, True]
    assert everything[1]["status"] == "open"
    [was_closed] = [item for item in everything if item["customer_id"] == str(closed)]
    assert was_closed["status"] == "closed" and was_closed["task_id"] is not None and was_closed["closed_at"] is not None

    assert customers_of(await listed(client, status="open")) == [str(unhappy), str(fresh), str(late)]
    assert customers_of(await listed(client, status="closed")) == [str(closed)]
    assert customers_of(await listed(client, overdue="true")) == [str(late)]
    assert customers_of(await listed(client, overdue="false")) == [str(unhappy), str(fresh), str(closed)]
    assert customers_of(await listed(client, status="open", overdue="false")) == [str(unhappy), str(fresh)]
    assert customers_of(await listed(client, survey_id=csat["id"])) == [str(unhappy)]
    assert customers_of(await listed(client, metric="csat")) == [str(unhappy)]
    assert customers_of(await listed(client, customer_id=str(fresh))) == [str(fresh)]
    assert customers_of(await listed(client, customer_id=str(promoter))) == []
    assert customers_of(await listed(client, touchpoint="checkout")) == [str(fresh), str(closed), str(late)]
    window = {"from": (now - dt.timedelta(days=3, hours=1)).isoformat(), "to": (now - dt.timedelta(days=2)).isoformat()}
    assert customers_of(await listed(client, **window)) == [str(closed)]  # `to` is exclusive

    paged, cursor = [], None
    while True:
        r = await client.get("/v1/followups", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        paged += r.json()["items"]
        if (cursor := r.json()["next_cursor"]) is None:
            break
    assert paged == everything

    one = await client.get(f"/v1/followups/{first['id']}", headers=testing.bearer(keys["read"]))
    assert (one.status_code, one.json()) == (200, first)
    # Once the customer is erased, the follow-up stays (the score counts) but names nobody.
    await apply(delivery("customer.erased", CustomerErased(customer_id=late, erased_at=now)))
    erased = (await client.get(f"/v1/followups/{first['id']}")).json()
    assert (erased["customer_id"], erased["customer_name"], erased["customer_email"]) == (str(late), None, None)
    missing = await client.get(f"/v1/followups/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/v1/followups", headers={"Authorization": ""})).status_code == 401


async def test_a_bad_filter_is_a_422_problem(client: httpx.AsyncClient) -> None:
    for params in (
        {"status": "pending"},
        {"overdue": "maybe"},
        {"metric": "csat2"},
        {"survey_id": "7"},
        {"from": "2026-11-03T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"cursor": "garbage"},
    ):
        r = await client.get("/v1/followups", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), params
    assert (await client.get("/v1/followups/not-an-id")).status_code == 422


async def test_the_export_has_the_lists_follow_ups_in_its_order_with_the_same_fields(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, keys: dict[str, str]
) -> None:
    nps = await make.survey("nps", name="=HYPERLINK(1)")  # a cell that would be a formula
    customers = [await make.customer() for _ in range(4)]
    for score, customer in zip((1, 3, 5, 6), customers, strict=True):
        await make.answer(nps["id"], {"nps": score}, customer_id=str(customer))
    now = dt.datetime.now(dt.UTC)
    async with session_factory() as session, session.begin():
        await session.execute(
            update(Followup).where(Followup.customer_id == customers[0]).values(due_at=now - dt.timedelta(hours=1))
        )
    await close_followup_of(session_factory, apply, customers[1], "nps", 0)

    for params in ({}, {"overdue": "true"}, {"status": "closed"}, {"status": "open", "overdue": "false"}):
        r = await client.get("/v1/followups/export", params=params, headers=testing.bearer(keys["read"]))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
        exported = testing.csv_records(r, list(EXPORT_HEADER))
        listed = await listed_all(client, params)
        assert [row["followup_id"] for row in exported] == [item["id"] for item in listed], params
        for row, item in zip(exported, listed, strict=True):
            assert row["customer_id"] == item["customer_id"] and row["status"] == item["status"]
            assert (row["customer_name"], row["customer_email"]) == (item["customer_name"], item["customer_email"])
            assert row["score"] == str(item["score"]) and row["overdue"] == str(item["overdue"]).lower()
            assert row["reason"] == item["reason"] and "=HYPERLINK(1)" in row["reason"]  # not at a cell's start: kept
            assert (row["task_id"] or None) == item["task_id"]
    assert testing.csv_records(await client.get("/v1/followups/export", params={"overdue": "true"}), list(EXPORT_HEADER))[0][
        "customer_id"
    ] == str(customers[0])
    for bad in ({"status": "pending"}, {"from": "2026-11-03T00:00:00Z", "to": "2026-11-01T00:00:00Z"}):
        assert (await client.get("/v1/followups/export", params=bad)).status_code == 422
    assert (await client.post("/v1/followups/export")).status_code == 405
    assert (await client.get("/v1/followups/export", headers={"Authorization": ""})).status_code == 401


async def listed_all(client: httpx.AsyncClient, params: dict[str, str], limit: int = 200) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        r = await client.get("/v1/followups", params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        if (cursor := r.json()["next_cursor"]) is None:
            return items


async def test_sort_by_due_lists_the_most_urgent_first_those_without_an_sla_last_and_pages_the_same(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, keys: dict[str, str]
) -> None:
    nps = await make.survey("nps")
    customers = [await make.customer() for _ in range(7)]
    for customer in customers:
        await make.answer(nps["id"], {"nps": 3}, customer_id=str(customer))
    now = dt.datetime.now(dt.UTC)
    # Due in (hours): two without an SLA; the answers were recorded in the list's order, so the
    # newest-first order is not the urgent-first one.
    due_in = (5, None, -3, 40, None, -30, 5)
    async with session_factory() as session, session.begin():
        for customer, hours in zip(customers, due_in, strict=True):
            due = None if hours is None else now + dt.timedelta(hours=hours)
            await session.execute(update(Followup).where(Followup.customer_id == customer).values(due_at=due))
    await close_followup_of(session_factory, apply, customers[3], "nps", 1)
    ids = {str(c): (await followup_of(session_factory, c)).id for c in customers}

    def expected(hours: list[int | None], descending: bool = False) -> list[str]:
        """The customers by due time (ties by the follow-up's id in the same direction), no SLA last."""
        chosen = [(h, ids[str(c)], str(c)) for c, h in zip(customers, due_in, strict=True) if h in hours]
        dated = sorted(((h, i, c) for h, i, c in chosen if h is not None), reverse=descending)
        undated = sorted(((i, c) for h, i, c in chosen if h is None), reverse=descending)
        return [c for _, _, c in dated] + [c for _, c in undated]

    everything = await listed(client, sort="due_at")
    assert customers_of(everything) == expected(list(due_in))
    assert customers_of(await listed(client, sort="-due_at")) == expected(list(due_in), descending=True)
    assert customers_of(await listed(client, sort="due_at", status="open")) == expected([-30, -3, 5, None])
    assert customers_of(await listed(client, sort="due_at", overdue="true")) == expected([-30, -3])
    assert customers_of(await listed(client, sort="-created_at")) == customers_of(await listed(client))
    assert customers_of(await listed(client, sort="created_at")) == [str(c) for c in customers]
    for sort in ("due_at", "-due_at"):  # pages of one, through the ties and into the follow-ups without an SLA
        paged = await listed_all(client, {"sort": sort}, limit=1)
        assert paged == await listed(client, sort=sort), sort
    r = await client.get("/v1/followups/export", params={"sort": "due_at"}, headers=testing.bearer(keys["read"]))
    assert r.status_code == 200, r.text
    assert [row["followup_id"] for row in testing.csv_records(r, list(EXPORT_HEADER))] == [i["id"] for i in everything]

    first = (await client.get("/v1/followups", params={"sort": "due_at", "limit": 1})).json()["next_cursor"]
    for params in ({"sort": "score"}, {"sort": "due"}, {"sort": "-created_at", "cursor": first}):
        r = await client.get("/v1/followups", params=params)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), (params, r.text)
    assert (await client.get("/v1/followups/export", params={"sort": "status"})).status_code == 422


async def test_the_open_and_the_overdue_follow_ups_by_due_time_are_index_range_scans(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_app: FastAPI, cem_database_url: str
) -> None:
    """The queue to work through (`status=open&sort=due_at`) and the overdue ones by urgency are
    read in order from one index, never every open one sorted, and a page reads only the rows it
    returns: the next page's cursor is where the scan starts, not a filter over those before it."""
    nps = await make.survey("nps")
    customers = [await make.customer() for _ in range(6)]
    for customer in customers:
        await make.answer(nps["id"], {"nps": 1}, customer_id=str(customer))
    now = dt.datetime.now(dt.UTC)
    async with session_factory() as session, session.begin():
        for n, customer in enumerate(customers):
            due = now + dt.timedelta(hours=n - 4)
            await session.execute(update(Followup).where(Followup.customer_id == customer).values(due_at=due))
    for params in (
        {"status": "open"},
        {"overdue": "true"},
        {"status": "open", "overdue": "true"},
        {"status": "open", "sort": "-due_at"},
    ):
        cursor = None
        for page in (1, 2):
            with testing.statements_sent(cem_app) as seen:
                r = await client.get(
                    "/v1/followups", params={"sort": "due_at", **params, "limit": 2, **({"cursor": cursor} if cursor else {})}
                )
            assert r.status_code == 200 and len(r.json()["items"]) == 2, r.text
            [(statement, parameters)] = [(s, p) for s, p in seen if "FROM followups" in s and "ORDER BY" in s]
            for kind, plan in (await plans(asyncpg_dsn(cem_database_url), statement, parameters)).items():
                scans = assert_reads_only_what_it_returns(plan, 2)
                [main] = [n for n in scans if n["Relation Name"] == "followups"]
                assert main["Index Name"] == "ix_followups_status_due_id", (params, kind, page, main)
            cursor = r.json()["next_cursor"]
