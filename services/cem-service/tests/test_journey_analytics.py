"""GET /v1/analytics/journeys/{id}: a journey stage by stage, checked against a hand count."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx

from cxkit.testing import bearer

from .conftest import interaction


def day(n: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2026, 10, n, hour, tzinfo=dt.UTC)


WINDOW = {"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}


async def test_stages_count_visits_customers_and_who_moved_on(client: httpx.AsyncClient, make: Any, apply: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    browse, checkout, payment, support = (f"{k}-{tag}" for k in ("browse", "checkout", "payment", "support"))
    for key in (browse, checkout, payment, support):
        await make.touchpoint(key)
    stages = [
        {"name": "Browse", "touchpoints": [browse]},
        {"name": "Buy", "touchpoints": [checkout, payment]},
        {"name": "Support", "touchpoints": [support]},
        {"name": "Loyalty", "touchpoints": []},
    ]
    r = await client.post("/v1/journeys", json={"name": f"Order {tag}", "stages": stages})
    assert r.status_code == 201, r.text
    journey = r.json()
    a, b, c, d = [await make.customer() for _ in range(4)]

    visits = [
        (a, browse, day(1)),
        (a, checkout, day(3)),
        (a, payment, day(4)),
        (a, support, day(10)),
        (a, browse, dt.datetime(2026, 9, 20, tzinfo=dt.UTC)),  # before the window
        (b, browse, day(2)),
        (b, checkout, day(5)),
        (c, checkout, day(1)),  # bought first, browsed later: not moved on from Browse
        (c, browse, day(6)),
        (d, browse, day(3)),
        (None, browse, day(4)),
        (None, browse, day(5)),
    ]
    unknown = {"customer_email": f"walk-in-{tag}@example.com"}  # an address the CEM knows no customer by
    await apply(
        *(interaction(customer, touchpoint=key, occurred_at=at, **({} if customer else unknown)) for customer, key, at in visits)
    )
    nps = await make.survey("nps")
    csat = await make.survey("csat")
    for survey, answer, key, at in (
        (nps, {"nps": 10}, checkout, "2026-10-05T12:00:00Z"),
        (nps, {"nps": 9}, checkout, "2026-10-06T12:00:00Z"),
        (nps, {"nps": 3}, payment, "2026-10-07T12:00:00Z"),
        (nps, {"nps": 0}, payment, "2026-11-07T12:00:00Z"),  # after the window
        (csat, {"csat": 5}, support, "2026-10-11T12:00:00Z"),
    ):
        await make.answer(survey["id"], answer, touchpoint=key, submitted_at=at)

    r = await client.get(f"/v1/analytics/journeys/{journey['id']}", params=WINDOW)
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["journey_id"], report["name"], report["customers"]) == (journey["id"], f"Order {tag}", 4)
    assert report["filters"]["from"] == "2026-10-01T00:00:00Z"
    shape = [
        (
            s["name"],
            s["visits"],
            s["anonymous_visits"],
            s["customers"],
            s["reached_next"],
            s["conversion_to_next"],
            s["median_days_to_next"],
        )
        for s in report["stages"]
    ]
    # Browse: A, B, C, D and two anonymous visits; A and B went on to Buy (2 and 3 days later);
    # C's purchase came before their first browse. Buy: A (twice), B, C; A went on to Support in 7 days.
    assert shape == [
        ("Browse", 6, 2, 4, 2, 0.5, 2.5),
        ("Buy", 4, 0, 3, 1, round(1 / 3, 4), 7.0),
        ("Support", 1, 0, 1, 0, 0.0, None),  # nobody went on to Loyalty (no touchpoints yet)
        ("Loyalty", 0, 0, 0, 0, None, None),
    ]
    assert report["stages"][1]["touchpoints"] == [checkout, payment]
    buy, support_stage = report["stages"][1], report["stages"][2]
    # 10 and 9 are promoters, 3 a detractor: (2 - 1) / 3.
    assert buy["nps"]["n"] == 3 and abs(buy["nps"]["score"] - 100 / 3) < 0.01
    assert buy["csat"] == {"n": 0, "score": None, "ci95": None}
    assert (support_stage["csat"]["n"], support_stage["csat"]["score"]) == (1, 100.0)
    assert report["stages"][0]["nps"]["n"] == 0

    # The whole time line takes in A's September visit (Browse visits 7, still 4 customers).
    everything = (await client.get(f"/v1/analytics/journeys/{journey['id']}")).json()
    assert everything["stages"][0]["visits"] == 7 and everything["stages"][0]["customers"] == 4
    assert everything["stages"][1]["nps"]["n"] == 4


async def test_journey_report_refusals(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    journey = (await client.post("/v1/journeys", json={"name": "Empty", "stages": []})).json()
    r = await client.get(f"/v1/analytics/journeys/{journey['id']}", headers=bearer(keys["read"]))
    assert r.status_code == 200 and r.json()["stages"] == [] and r.json()["customers"] == 0
    missing = await client.get(f"/v1/analytics/journeys/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    bad = await client.get(f"/v1/analytics/journeys/{journey['id']}", params={"from": WINDOW["to"], "to": WINDOW["from"]})
    assert bad.status_code == 422
    assert (await client.get(f"/v1/analytics/journeys/{journey['id']}", headers=bearer(keys["revoked"]))).status_code == 401
