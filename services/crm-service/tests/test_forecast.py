"""GET /v1/forecast: open deals by expected close period at their stage's probability, deals won
and lost per period, overdue and undated deals; checked against a fixture worked out by hand."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import httpx
from sqlalchemy import update

from crm.deals.models import Deal
from crm.funnel.service import next_period, period_start
from cxkit.testing import bearer


def test_periods_start_on_mondays_first_days_of_months_and_quarters() -> None:
    day = dt.date(2026, 12, 5)  # a Saturday
    assert period_start(day, "week") == dt.date(2026, 11, 30)
    assert period_start(day, "month") == dt.date(2026, 12, 1)
    assert period_start(day, "quarter") == dt.date(2026, 10, 1)
    assert period_start(dt.date(2026, 3, 31), "quarter") == dt.date(2026, 1, 1)
    assert next_period(dt.date(2026, 11, 30), "week") == dt.date(2026, 12, 7)
    assert next_period(dt.date(2026, 12, 1), "month") == dt.date(2027, 1, 1)
    assert next_period(dt.date(2026, 10, 1), "quarter") == dt.date(2027, 1, 1)
    assert next_period(dt.date(2026, 7, 1), "quarter") == dt.date(2026, 10, 1)


async def test_the_forecast_matches_a_hand_count(client: httpx.AsyncClient, make: Any, session_factory: Any) -> None:
    owner = f"rep-{uuid.uuid4().hex[:8]}"
    customer = (await make.customer())["id"]
    today = dt.datetime.now(dt.UTC).date()
    month = period_start(today, "month")
    next_month = next_period(month, "month")
    month_after = next_period(next_month, "month")
    last_month = period_start(month - dt.timedelta(days=1), "month")

    async def deal(amount: str | None, stage: str, close: dt.date | None, **fields: Any) -> dict[str, Any]:
        body = {"owner": owner, "amount": amount, "stage": stage, "currency": "EUR", **fields}
        if close is not None:
            body["expected_close_date"] = close.isoformat()
        return await make.deal(customer, **body)

    # Default pipeline: Qualification 0.1, Needs analysis 0.2, Proposal 0.5, Negotiation 0.8.
    await deal("1000.00", "Qualification", next_month - dt.timedelta(days=1))  # this month: 100.00
    await deal("2000.00", "Proposal", today)  # this month: 1000.00
    await deal("4000.00", "Negotiation", next_month + dt.timedelta(days=14))  # next month: 3200.00
    await deal(None, "Proposal", month_after)  # the month after: counted, no amount
    await deal("500.00", "Needs analysis", None)  # undated: 100.00
    await deal("800.00", "Negotiation", last_month)  # overdue, before the window: 640.00
    await deal("9000.00", "Qualification", next_period(month_after, "month"))  # after the 3 months asked for
    await deal("7000.00", "Qualification", today, currency="USD")  # another currency
    await make.deal(customer, owner="someone-else", amount="5000.00", expected_close_date=today.isoformat())
    won = await deal("3000.00", "Negotiation", month)
    await make.move(won["id"], status="won")
    lost = await deal("700.00", "Proposal", month)
    await make.move(lost["id"], status="lost", lost_reason="budget")
    won_before = await deal("6000.00", "Negotiation", last_month)
    await make.move(won_before["id"], status="won")
    async with session_factory() as session, session.begin():  # won last month
        closed_at = dt.datetime.combine(last_month, dt.time(12), dt.UTC)
        await session.execute(update(Deal).where(Deal.id == uuid.UUID(won_before["id"])).values(closed_at=closed_at))

    r = await client.get("/v1/forecast", params={"owner": owner, "currency": "EUR", "periods": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["interval"], body["owner"], body["currency"], body["as_of"]) == ("month", owner, "EUR", today.isoformat())
    assert [(p["start"], p["end"]) for p in body["periods"]] == [
        (month.isoformat(), next_month.isoformat()),
        (next_month.isoformat(), month_after.isoformat()),
        (month_after.isoformat(), next_period(month_after, "month").isoformat()),
    ]
    assert [p["expected"] for p in body["periods"]] == [
        {"count": 2, "amount": "3000.00", "weighted_amount": "1100.00"},
        {"count": 1, "amount": "4000.00", "weighted_amount": "3200.00"},
        {"count": 1, "amount": "0.00", "weighted_amount": "0.00"},
    ]
    assert [(p["won"], p["lost"]) for p in body["periods"]] == [
        ({"count": 1, "amount": "3000.00"}, {"count": 1, "amount": "700.00"}),
        ({"count": 0, "amount": "0.00"}, {"count": 0, "amount": "0.00"}),
        ({"count": 0, "amount": "0.00"}, {"count": 0, "amount": "0.00"}),
    ]
    overdue = {"count": 1, "amount": "800.00", "weighted_amount": "640.00"}
    assert body["overdue"] == overdue
    assert body["undated"] == {"count": 1, "amount": "500.00", "weighted_amount": "100.00"}

    # Starting last month: its won deal, and the overdue deal in its own period as well.
    earlier = (
        await client.get("/v1/forecast", params={"owner": owner, "currency": "EUR", "periods": 2, "from": last_month.isoformat()})
    ).json()
    first = earlier["periods"][0]
    assert first["start"] == last_month.isoformat()
    assert first["expected"] == overdue and first["won"] == {"count": 1, "amount": "6000.00"}
    assert earlier["periods"][1]["expected"]["count"] == 2 and earlier["overdue"] == overdue

    # Quarters and weeks cut the same deals differently; the other currency is its own forecast.
    quarter = (await client.get("/v1/forecast", params={"owner": owner, "currency": "EUR", "interval": "quarter"})).json()
    assert quarter["periods"][0]["start"] == period_start(today, "quarter").isoformat() and len(quarter["periods"]) == 6
    # Every dated open deal from this month on, and last month's when this quarter holds it.
    in_quarter = 5 + (last_month >= period_start(today, "quarter"))
    assert sum(p["expected"]["count"] for p in quarter["periods"]) == in_quarter
    week = (await client.get("/v1/forecast", params={"owner": owner, "interval": "week", "periods": 1})).json()
    assert week["periods"][0]["start"] == period_start(today, "week").isoformat()
    usd = (await client.get("/v1/forecast", params={"owner": owner, "currency": "USD"})).json()
    assert usd["periods"][0]["expected"] == {"count": 1, "amount": "7000.00", "weighted_amount": "700.00"}


async def test_forecast_refusals(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    assert (await client.get("/v1/forecast", headers=bearer(keys["read"]))).status_code == 200
    refused = ({"periods": 0}, {"periods": 37}, {"interval": "day"}, {"currency": "euro"})
    for params in (*refused, {"from": "2026-13-01"}, {"from": "9999-12-31"}, {"from": "0"}):
        r = await client.get("/v1/forecast", params=params)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", params
    missing = await client.get("/v1/forecast", params={"pipeline_id": str(uuid.uuid4())})
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/forecast", headers=bearer(keys["revoked"]))).status_code == 401


async def test_the_published_schema_states_the_days_a_forecast_may_start_from(client: httpx.AsyncClient) -> None:
    """A date has no bounds in JSON Schema, so the range is a pattern on the year: a client (or a
    test generator) reading the document does not send a day the API refuses."""
    spec = (await client.get("/openapi.json")).json()
    (param,) = [p for p in spec["paths"]["/v1/forecast"]["get"]["parameters"] if p["name"] == "from"]
    (day,) = [s for s in param["schema"]["anyOf"] if s.get("type") == "string"]
    pattern = re.compile(day["pattern"])
    assert day["format"] == "date"
    for value, accepted in (("1900-01-01", True), ("2999-12-31", True), ("1899-12-31", False), ("3000-01-01", False)):
        assert bool(pattern.search(value)) is accepted, value
        status = (await client.get("/v1/forecast", params={"from": value})).status_code
        assert status == (200 if accepted else 422), value
