"""GET /v1/deals/export: the deal list as a streamed, spreadsheet-safe CSV, with the list's
filters and order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from crm.deals.schemas import DealRead
from cxkit import testing
from cxkit.testing import bearer

HEADER = list(DealRead.model_fields)


async def test_the_export_has_the_deals_the_list_shows_in_its_order_safe_for_spreadsheets(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    customer = await make.customer()
    pipeline = await make.pipeline()
    for n, amount in enumerate(["1200.50", "300", "99999.99", None]):
        await make.deal(customer["id"], title=f"Deal {n}", pipeline_id=pipeline["id"], **({"amount": amount} if amount else {}))
    formula = await make.deal(customer["id"], title='=HYPERLINK("http://x")', pipeline_id=pipeline["id"], stage="Demo")
    await make.deal(customer["id"], title="Elsewhere")  # the default pipeline

    for params in ({"pipeline_id": pipeline["id"], "sort": "amount"}, {"pipeline_id": pipeline["id"], "stage": "Demo"}, {}):
        r = await client.get("/v1/deals/export", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"].startswith('attachment; filename="deals-')
        rows = testing.csv_records(r, HEADER)
        assert [row["id"] for row in rows] == [d["id"] for d in await testing.every_item(client, "/v1/deals", **params)], params
    by_amount = testing.csv_records(
        await client.get("/v1/deals/export", params={"pipeline_id": pipeline["id"], "sort": "amount"}), HEADER
    )
    assert [row["amount"] for row in by_amount] == ["300.00", "1200.50", "99999.99", "", ""]  # numbers stay numbers
    demo = next(row for row in by_amount if row["id"] == formula["id"])
    assert demo["title"] == '\'=HYPERLINK("http://x")' and (demo["stage"], Decimal(demo["probability"])) == (
        "Demo",
        Decimal("0.6"),
    )
    assert demo["pipeline_id"] == pipeline["id"] and demo["version"] == "1"

    empty = await client.get("/v1/deals/export", params={"owner": "nobody-owns-these"})
    assert empty.status_code == 200 and empty.text.splitlines() == [",".join(HEADER)]
    assert (await client.get("/v1/deals/export", params={"stage": "Demo"})).status_code == 422  # needs pipeline_id
    assert (await client.get("/v1/deals/export", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/deals/export", headers=bearer(keys["read"]))).status_code == 200
    refused = await client.patch("/v1/deals/export", json={})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
