"""GET /v1/leads/export: the lead list as a streamed, spreadsheet-safe CSV, with the list's filters
and order."""

from __future__ import annotations

from typing import Any

import httpx

from crm.leads.schemas import LeadRead
from cxkit import testing
from cxkit.testing import bearer

HEADER = list(LeadRead.model_fields)


async def test_the_export_has_the_leads_the_list_shows_in_its_order_safe_for_spreadsheets(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    campaign = await make.campaign()
    for n, (status, score) in enumerate([("new", 10), ("working", 80), ("new", 55), ("qualified", 30)]):
        await make.lead(name=f"Lead {n}", company="Acme 100%", status=status, score=score, campaign_id=campaign["id"])
    phone = await make.lead(name="Dial Me", phone="+1 202 555 0147", owner="sam", score=99)
    converted = await make.lead(name="Now A Customer")
    assert (await client.post(f"/v1/leads/{converted['id']}/convert", json={})).status_code == 200

    for params in (
        {},
        {"sort": "-score"},
        {"campaign_id": campaign["id"], "status": "new"},
        {"q": "100%"},  # a LIKE wildcard in the term is searched for as itself
        {"converted": "true"},
        {"owner": "sam", "sort": "updated_at"},
    ):
        r = await client.get("/v1/leads/export", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"].startswith('attachment; filename="leads-')
        rows = testing.csv_records(r, HEADER)
        listed = await testing.every_item(client, "/v1/leads", **params)
        assert [row["id"] for row in rows] == [lead["id"] for lead in listed], params
    hottest = testing.csv_records(await client.get("/v1/leads/export", params={"sort": "-score"}), HEADER)
    assert [row["score"] for row in hottest[:2]] == ["99", "80"]  # numbers stay numbers
    dial = next(row for row in hottest if row["id"] == phone["id"])
    assert dial["phone"] == "'+1 202 555 0147" and dial["owner"] == "sam"
    done = testing.csv_records(await client.get("/v1/leads/export", params={"converted": "true"}), HEADER)
    assert [(row["id"], row["status"]) for row in done] == [(converted["id"], "qualified")] and done[0]["converted_customer_id"]

    empty = await client.get("/v1/leads/export", params={"owner": "nobody-owns-these"})
    assert empty.status_code == 200 and empty.text.splitlines() == [",".join(HEADER)]
    assert (await client.get("/v1/leads/export", params={"status": "maybe"})).status_code == 422
    assert (await client.get("/v1/leads/export", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/leads/export", headers=bearer(keys["read"]))).status_code == 200
    refused = await client.delete("/v1/leads/export")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
