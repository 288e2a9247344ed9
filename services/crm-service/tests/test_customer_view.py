"""The joined customer view and the timeline, from the CRM's own data."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx

from crm.customer_view.repository import page_query
from crm.customer_view.service import purchase_frequency
from cxkit.http.pagination import encode_cursor
from cxkit.keyset import BAD_CURSOR


def days_ago(days: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()


async def test_view_joins_record_open_deals_stats_and_tasks(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer(name="Ada")
    cid = customer["id"]
    for days, amount in ((60, "100.00"), (30, "50.00"), (1, "30.00")):
        await make.interaction(customer_id=cid, type="purchase", amount=amount, occurred_at=days_ago(days))
    await make.interaction(customer_id=cid, type="purchase", occurred_at=days_ago(2))  # no amount: not in the average
    await make.interaction(customer_id=cid, type="call", occurred_at=days_ago(5))
    await make.interaction(customer_id=cid, type="support_ticket_closed", occurred_at=days_ago(0.5))
    open_deal = await make.deal(cid, amount="700.00", expected_close_date="2026-12-31")
    soon = await make.deal(cid, amount="300.00", expected_close_date="2026-12-01")
    won = await make.deal(cid, amount="999.00")
    await make.move(won["id"], status="won")
    task = await make.task(cid, due_at="2026-12-01T00:00:00Z")
    done = await make.task(cid)
    await client.patch(f"/v1/tasks/{done['id']}", json={"status": "completed"})

    r = await client.get(f"/v1/customers/{cid}/view")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["customer"]["id"] == cid and view["customer"]["lifecycle_stage"] == "customer"
    assert [d["id"] for d in view["open_deals"]] == [soon["id"], open_deal["id"]]
    assert view["open_deal_value"] == "1000.00"
    stats = view["interaction_stats"]
    assert stats["count"] == 6 and stats["purchases"] == 4
    assert stats["purchase_total"] == "180.00" and stats["average_order_value"] == "60.00"
    # 4 purchases since the first one 60 days ago: 4 / 60 x 30 = 2.0 per 30 days.
    assert stats["purchase_frequency_per_30d"] == 2.0
    assert dt.datetime.fromisoformat(stats["last_contacted_at"]) < dt.datetime.fromisoformat(stats["last_interaction_at"])
    assert [t["id"] for t in view["open_tasks"]] == [task["id"]]
    assert view["experience"] is None


async def test_view_of_a_customer_without_history_and_of_unknown_ids(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer()
    view = (await client.get(f"/v1/customers/{customer['id']}/view")).json()
    assert view["open_deals"] == [] and view["open_deal_value"] == "0.00"
    stats = view["interaction_stats"]
    assert stats["count"] == 0 and stats["average_order_value"] is None and stats["purchase_frequency_per_30d"] is None
    assert (await client.get(f"/v1/customers/{uuid.uuid4()}/view")).status_code == 404
    assert (await client.get(f"/v1/customers/{uuid.uuid4()}/timeline")).status_code == 404


def test_purchase_frequency_is_measured_over_at_least_thirty_days() -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    assert purchase_frequency(0, None, now) is None
    assert purchase_frequency(1, now - dt.timedelta(days=1), now) == 1.0  # one purchase yesterday: 1 per 30 days, not 30
    assert purchase_frequency(12, now - dt.timedelta(days=360), now) == 1.0
    assert purchase_frequency(3, now - dt.timedelta(days=45), now) == 2.0


async def test_timeline_merges_all_kinds_newest_first_with_pagination(client: httpx.AsyncClient, make: Any) -> None:
    cid = (await make.customer())["id"]
    call = await make.interaction(customer_id=cid, type="call", occurred_at="2020-01-01T10:00:00Z", summary="intro call")
    deal = await make.deal(cid, title="Big one")
    await make.move(deal["id"], stage="Proposal")
    task = await make.task(cid, title="Send offer")
    await client.patch(f"/v1/tasks/{task['id']}", json={"status": "completed"})
    doc = (
        await client.post("/v1/documents", data={"customer_id": cid}, files={"file": ("o.pdf", b"%PDF", "application/pdf")})
    ).json()

    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"/v1/customers/{cid}/timeline", params=params)).json()
        entries += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    kinds = [e["kind"] for e in entries]
    assert kinds == [
        "document_added",
        "task_completed",
        "task_created",
        "deal_stage_changed",
        "customer_changed",  # the deal made the lead an opportunity
        "deal_stage_changed",
        "interaction",
    ]
    times = [e["at"] for e in entries]
    assert times == sorted(times, reverse=True)
    assert entries[0]["id"] == doc["id"] and entries[0]["filename"] == "o.pdf"
    assert (entries[3]["from_stage"], entries[3]["to_stage"], entries[3]["deal_title"]) == (
        "Qualification",
        "Proposal",
        "Big one",
    )
    assert (entries[4]["via"], entries[4]["version"]) == ("deal", 2)
    assert entries[4]["changes"] == [{"field": "lifecycle_stage", "from": "lead", "to": "opportunity"}]
    assert entries[-1]["id"] == call["id"] and entries[-1]["summary"] == "intro call"

    only = (await client.get(f"/v1/customers/{cid}/timeline", params=[("kind", "interaction"), ("kind", "task_created")])).json()
    assert [e["kind"] for e in only["items"]] == ["task_created", "interaction"]
    assert (await client.get(f"/v1/customers/{cid}/timeline", params={"kind": "feedback"})).status_code == 422
    assert (await client.get(f"/v1/customers/{cid}/timeline", params={"cursor": "WyJ4Il0"})).status_code == 422


async def test_timeline_cursor_of_an_unknown_kind_is_422_and_compiles_nothing(client: httpx.AsyncClient, make: Any) -> None:
    cid = (await make.customer())["id"]
    url = f"/v1/customers/{cid}/timeline"
    before = page_query.cache_info().currsize
    for n in range(20):
        cursor = encode_cursor(["2026-01-01T00:00:00+00:00", f"x{n}", str(uuid.uuid4())])
        answer = await client.get(url, params={"cursor": cursor})
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["detail"] == BAD_CURSOR
    # A crafted cursor never reaches the statement cache, and the cache has a bound anyway
    # (its key holds the `kind` filter, any of 2**15 subsets).
    assert page_query.cache_info().currsize == before
    assert page_query.cache_info().maxsize is not None

    # A cursor of a known kind still pages, also under a `kind` filter that leaves its kind out.
    for kind in ("interaction", "task_created"):
        known = encode_cursor(["2026-01-01T00:00:00+00:00", kind, str(uuid.uuid4())])
        for params in ({"cursor": known}, {"cursor": known, "kind": "interaction"}):
            answer = await client.get(url, params=params)
            assert answer.status_code == 200, (params, answer.text)
