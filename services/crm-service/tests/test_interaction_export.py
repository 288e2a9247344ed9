"""GET /v1/interactions/export: the interaction list as a streamed, spreadsheet-safe CSV, with the
list's filters and order."""

from __future__ import annotations

import json
from typing import Any

import httpx

from crm.interactions.schemas import InteractionRead
from cxkit import testing
from cxkit.testing import bearer

HEADER = list(InteractionRead.model_fields)


async def test_the_export_has_the_interactions_the_list_shows_in_its_order_safe_for_spreadsheets(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    ada, bob = (await make.customer())["id"], (await make.customer())["id"]
    for day, (customer, kind, amount) in enumerate(
        [
            (ada, "purchase", "129.90"),
            (ada, "call", None),
            (bob, "purchase", "5"),
            (ada, "purchase", "1000.00"),
            (bob, "email", None),
        ],
        start=1,
    ):
        await make.interaction(
            customer_id=customer,
            type=kind,
            channel="web",
            occurred_at=f"2026-11-{day:02d}T10:00:00Z",
            summary=f"Order {day}" if kind == "purchase" else f"{kind} {day}",
            metadata={"n": day, "tags": ["a", "b"]},
            **({"amount": amount, "currency": "EUR"} if amount else {}),
        )
    formula = await make.interaction(
        customer_id=bob, type="note", summary='=HYPERLINK("http://x")', occurred_at="2026-11-09T00:00:00Z"
    )

    windows = {"occurred_from": "2026-11-02T00:00:00Z", "occurred_to": "2026-11-05T00:00:00Z"}
    for params in ({}, {"customer_id": ada, "type": "purchase"}, {"sort": "occurred_at", **windows}, {"customer_id": bob}):
        r = await client.get("/v1/interactions/export", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"].startswith('attachment; filename="interactions-')
        rows = testing.csv_records(r, HEADER)
        assert [row["id"] for row in rows] == [i["id"] for i in await testing.every_item(client, "/v1/interactions", **params)], (
            params
        )

    purchases = testing.csv_records(
        await client.get("/v1/interactions/export", params={"customer_id": ada, "type": "purchase", "sort": "occurred_at"}),
        HEADER,
    )
    assert [(row["amount"], row["currency"]) for row in purchases] == [("129.90", "EUR"), ("1000.00", "EUR")]
    assert json.loads(purchases[0]["metadata"]) == {"n": 1, "tags": ["a", "b"]} and purchases[0]["source"] == "api"
    assert purchases[0]["occurred_at"] == "2026-11-01T10:00:00+00:00"
    note = next(
        row for row in testing.csv_records(await client.get("/v1/interactions/export"), HEADER) if row["id"] == formula["id"]
    )
    assert note["summary"] == '\'=HYPERLINK("http://x")' and note["amount"] == ""

    empty = await client.get("/v1/interactions/export", params={"type": "no-such-type"})
    assert empty.status_code == 200 and empty.text.splitlines() == [",".join(HEADER)]
    backwards = await client.get("/v1/interactions/export", params={**windows, "occurred_to": windows["occurred_from"]})
    assert backwards.status_code == 422 and backwards.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/interactions/export", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/interactions/export", headers=bearer(keys["read"]))).status_code == 200
    refused = await client.post("/v1/interactions/export", json={})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
