"""Pipelines and deals: ordered stages, a default pipeline, deals moving with append-only
history, won/lost with a lost reason, `deal.stage_changed` and the customer's open value."""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from crm.customers import service as customers
from crm.customers.models import Customer, CustomerChange
from crm.deals.repository import open_value_query
from crm.pipelines.models import Pipeline
from cxkit import keyset
from cxkit.http.pagination import encode_cursor
from cxkit.testing import bearer

from .customer_races import erase, merge, sent_during

SPEC_STAGES = [
    ("Qualification", "0.100"),
    ("Needs analysis", "0.200"),
    ("Proposal", "0.500"),
    ("Negotiation", "0.800"),
    ("Closed won", "1.000"),
    ("Closed lost", "0.000"),
]


async def test_the_default_pipeline_has_the_spec_stages_and_is_created_once(
    client: httpx.AsyncClient, session_factory: Any
) -> None:
    pages = await asyncio.gather(*[client.get("/v1/pipelines") for _ in range(5)])
    assert {p.status_code for p in pages} == {200}
    [pipeline] = pages[0].json()["items"]
    assert pipeline["is_default"] is True and pipeline["name"] == "Sales pipeline"
    assert [(s["name"], s["probability"]) for s in pipeline["stages"]] == SPEC_STAGES
    assert [s["position"] for s in pipeline["stages"]] == list(range(6))
    assert [s["is_won"] for s in pipeline["stages"]][-2:] == [True, False]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Pipeline)) == 1


async def test_pipeline_rules_one_won_one_lost_unique_names_admin_only(
    client: httpx.AsyncClient, keys: dict[str, str], make: Any
) -> None:
    base = [
        {"name": "A", "probability": "0.3"},
        {"name": "W", "probability": "1", "is_won": True},
        {"name": "L", "probability": "0", "is_lost": True},
    ]
    bad_stage_lists = [
        [
            {"name": "A", "probability": "0.3"},
            {"name": "W", "probability": "1", "is_won": True},
            {"name": "W2", "probability": "1", "is_won": True},
        ],
        [{"name": "A", "probability": "0.3"}, {"name": "a", "probability": "0.4"}, *base[1:]],
        [{"name": "A", "probability": "1.5"}, *base[1:]],
        [{"name": "A", "probability": "0.3"}, {"name": "W", "probability": "0.9", "is_won": True}, base[2]],
        [{"name": "A", "probability": "0.3", "is_won": True, "is_lost": True}, *base[1:]],
    ]
    for stages in bad_stage_lists:
        assert (await client.post("/v1/pipelines", json={"name": "P", "stages": stages})).status_code == 422, stages
    assert (
        await client.post("/v1/pipelines", json={"name": "P", "stages": base}, headers=bearer(keys["write"]))
    ).status_code == 403
    taken = await client.post("/v1/pipelines", json={"name": "Sales pipeline", "stages": base})
    assert taken.status_code == 409  # the built-in default exists before any other pipeline
    made = await make.pipeline(name="P2")
    assert (await client.post("/v1/pipelines", json={"name": "p2", "stages": base})).status_code == 409
    assert made["is_default"] is False


async def test_making_a_pipeline_default_unsets_the_previous_one(client: httpx.AsyncClient, make: Any) -> None:
    await client.get("/v1/pipelines")
    other = await make.pipeline()
    r = await client.patch(f"/v1/pipelines/{other['id']}", json={"is_default": True}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["is_default"] is True and r.json()["version"] == 2
    defaults = [p for p in (await client.get("/v1/pipelines")).json()["items"] if p["is_default"]]
    assert [p["id"] for p in defaults] == [other["id"]]
    deal = await make.deal()
    assert deal["pipeline_id"] == other["id"] and deal["stage"] == "Lead in"
    assert (await client.delete(f"/v1/pipelines/{other['id']}")).status_code == 409


async def test_stages_can_be_renamed_and_reordered_but_not_removed_under_a_deal(client: httpx.AsyncClient, make: Any) -> None:
    pipeline = await make.pipeline()
    lead_in, demo, won, lost = pipeline["stages"]
    deal = await make.deal(pipeline_id=pipeline["id"], stage="Demo")
    path = f"/v1/pipelines/{pipeline['id']}"
    keep = [
        {"id": demo["id"], "name": "Lead in", "probability": "0.6"},
        {"id": lead_in["id"], "name": "Demo", "probability": "0.2"},
        {"id": won["id"], "name": "Won", "probability": "1", "is_won": True},
        {"id": lost["id"], "name": "Lost", "probability": "0", "is_lost": True},
    ]
    r = await client.patch(path, json={"stages": keep})
    assert r.status_code == 200, r.text
    assert [s["name"] for s in r.json()["stages"]] == ["Lead in", "Demo", "Won", "Lost"]
    assert (await client.get(f"/v1/deals/{deal['id']}")).json()["stage"] == "Lead in"  # the same stage, renamed
    without_demo_stage = [keep[1], keep[2], keep[3], {"name": "New", "probability": "0.5"}]
    removed = await client.patch(path, json={"stages": without_demo_stage})
    assert removed.status_code == 409 and "Lead in" in removed.json()["detail"]


async def test_deal_defaults_and_references(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer(owner="kim")
    deal = await make.deal(customer["id"], amount="1200.50")
    assert (deal["stage"], deal["probability"], deal["status"], deal["owner"], deal["currency"]) == (
        "Qualification",
        "0.100",
        "open",
        "kim",
        "EUR",
    )
    assert deal["amount"] == "1200.50" and deal["version"] == 1
    for bad in (
        {"customer_id": str(uuid.uuid4()), "title": "x"},
        {"customer_id": customer["id"], "title": "x", "pipeline_id": str(uuid.uuid4())},
        {"customer_id": customer["id"], "title": "x", "stage": "Nope"},
        {"customer_id": customer["id"], "title": "x", "amount": "1e30"},
        {"customer_id": customer["id"], "title": "x", "amount": "-5"},
        {"customer_id": customer["id"], "title": "x", "amount": "1.001"},
        {"customer_id": customer["id"], "title": "x", "currency": "euro"},
        {"customer_id": customer["id"], "title": ""},
        {"customer_id": customer["id"], "title": "x", "expected_close_date": "2026-02-30"},
    ):
        assert (await client.post("/v1/deals", json=bad)).status_code == 422, bad


async def test_moves_are_kept_as_append_only_history_and_announced(
    client: httpx.AsyncClient, make: Any, events: Any, keys: dict[str, str]
) -> None:
    customer = await make.customer(lifecycle_stage="lead")
    deal = await make.deal(customer["id"], amount="500.00")
    moved = await client.patch(f"/v1/deals/{deal['id']}", json={"stage": "proposal"}, headers=bearer(keys["write"]))
    assert moved.status_code == 200 and moved.json()["stage"] == "Proposal" and moved.json()["version"] == 2
    history = (await client.get(f"/v1/deals/{deal['id']}/history")).json()["items"]
    assert [(h["seq"], h["from_stage"], h["to_stage"], h["to_status"]) for h in history] == [
        (1, None, "Qualification", "open"),
        (2, "Qualification", "Proposal", "open"),
    ]
    assert history[1]["changed_by"] == "test-write" and history[1]["amount"] == "500.00"
    announced = await events("deal.stage_changed")
    assert [(e["data"]["from_stage"], e["data"]["to_stage"]) for e in announced] == [
        (None, "Qualification"),
        ("Qualification", "Proposal"),
    ]
    assert announced[1]["subject"] == customer["id"] and announced[1]["data"]["customer_open_deal_value"] == "500.00"
    assert (await client.get(f"/v1/customers/{customer['id']}")).json()["lifecycle_stage"] == "opportunity"
    # There is no route that changes or deletes history entries.
    assert (await client.delete(f"/v1/deals/{deal['id']}/history")).status_code == 405


async def test_lost_needs_a_reason_won_makes_the_customer_a_customer(client: httpx.AsyncClient, make: Any, events: Any) -> None:
    customer = await make.customer()
    lost_deal = await make.deal(customer["id"], amount="100.00")
    no_reason = await client.patch(f"/v1/deals/{lost_deal['id']}", json={"status": "lost"})
    assert no_reason.status_code == 422 and no_reason.json()["errors"][0]["loc"] == ["body", "lost_reason"]
    # Worded as a request-validation error is: the field's path, then the rule.
    assert no_reason.json()["detail"] == "body.lost_reason: required when a deal is lost"
    lost = await make.move(lost_deal["id"], status="lost", lost_reason="Too expensive")
    assert (lost["status"], lost["stage"], lost["lost_reason"]) == ("lost", "Closed lost", "Too expensive") and lost["closed_at"]

    won_deal = await make.deal(customer["id"], amount="300.00")
    won = await make.move(won_deal["id"], status="won")
    assert (won["status"], won["stage"], won["lost_reason"]) == ("won", "Closed won", None)
    assert (await client.get(f"/v1/customers/{customer['id']}")).json()["lifecycle_stage"] == "customer"
    assert (await client.patch(f"/v1/deals/{won_deal['id']}", json={"status": "open"})).status_code == 422
    reopened = await make.move(won_deal["id"], stage="Negotiation")
    assert (reopened["status"], reopened["closed_at"]) == ("open", None)
    assert (await client.patch(f"/v1/deals/{won_deal['id']}", json={"stage": "Closed won", "status": "lost"})).status_code == 422
    assert [e["data"]["status"] for e in await events("deal.stage_changed")] == ["open", "lost", "open", "won", "open"]


async def test_amount_change_of_an_open_deal_announces_the_customers_new_open_value(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    customer = await make.customer()
    deal = await make.deal(customer["id"], amount="100.00")
    await make.deal(customer["id"], amount="50.00")
    await make.move(deal["id"], amount="250.00")
    [update] = [e for e in await events("customer.updated") if e["data"]["changed"] == ["open_deal_value"]]
    assert update["data"]["open_deal_value"] == "300.00"
    assert (await client.delete(f"/v1/deals/{deal['id']}")).status_code == 204
    last = (await events("customer.updated"))[-1]["data"]
    assert last["changed"] == ["open_deal_value"] and last["open_deal_value"] == "50.00"


async def test_deal_list_filters_by_stage_status_and_sorts_by_amount(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer()
    small = await make.deal(customer["id"], amount="10.00")
    big = await make.deal(customer["id"], amount="99.00", stage="Proposal")
    none = await make.deal(customer["id"])
    pipeline_id = small["pipeline_id"]
    items = (await client.get("/v1/deals", params={"sort": "-amount", "limit": 2})).json()
    assert [d["id"] for d in items["items"]] == [big["id"], small["id"]]
    rest = (await client.get("/v1/deals", params={"sort": "-amount", "cursor": items["next_cursor"]})).json()["items"]
    assert [d["id"] for d in rest] == [none["id"]]
    in_proposal = (await client.get("/v1/deals", params={"pipeline_id": pipeline_id, "stage": "Proposal"})).json()["items"]
    assert [d["id"] for d in in_proposal] == [big["id"]]
    assert (await client.get("/v1/deals", params={"stage": "Proposal"})).status_code == 422
    assert (await client.get("/v1/deals", params={"status": "won"})).json()["items"] == []
    assert (await client.get("/v1/deals", params={"status": "maybe"})).status_code == 422


async def test_stale_if_match_on_a_deal_is_412(client: httpx.AsyncClient, make: Any) -> None:
    deal = await make.deal()
    await make.move(deal["id"], title="Renamed")
    r = await client.patch(f"/v1/deals/{deal['id']}", json={"stage": "Proposal"}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert len((await client.get(f"/v1/deals/{deal['id']}/history")).json()["items"]) == 1


# The largest amount a deal takes (numeric(18, 2)).
MOST = "9999999999999999.99"


async def test_open_deals_adding_up_past_one_deals_bound_are_stored_and_announced_with_their_sum(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    customer = await make.customer()
    first = await make.deal(customer["id"], amount="9000000000000000.00")
    second = await client.post("/v1/deals", json={"customer_id": customer["id"], "title": "a", "amount": "9000000000000000.00"})
    assert second.status_code == 201, second.text
    assert (await events("deal.stage_changed"))[-1]["data"]["customer_open_deal_value"] == "18000000000000000.00"

    moved = await client.patch(f"/v1/deals/{first['id']}", json={"amount": MOST})
    assert moved.status_code == 200, moved.text
    updated = [e["data"] for e in await events("customer.updated") if e["data"]["changed"] == ["open_deal_value"]]
    assert updated[-1]["open_deal_value"] == "18999999999999999.99"

    lead = await make.lead()
    converted = await client.post(
        f"/v1/leads/{lead['id']}/convert", json={"customer_id": customer["id"], "deal": {"title": "b", "amount": MOST}}
    )
    assert converted.status_code == 200, converted.text
    assert (await events("deal.stage_changed"))[-1]["data"]["customer_open_deal_value"] == "28999999999999999.98"
    view = (await client.get(f"/v1/customers/{customer['id']}/view")).json()
    assert view["open_deal_value"] == "28999999999999999.98"


@pytest.mark.parametrize(
    "value",
    [
        "1E+16",  # past numeric(18, 2): PostgreSQL's 22003
        "-10000000000000000",
        "9999999999999999.995",  # rounded to cents, 10^16
        "1e999999",  # more digits than the driver sends
        "1E-20000",
        "0.001",  # finer than cents: no page ends there
    ],
)
async def test_an_amount_cursor_the_column_cannot_hold_is_a_bad_cursor(client: httpx.AsyncClient, make: Any, value: str) -> None:
    await make.deal(amount="10.00")
    for sort in ("amount", "-amount"):
        r = await client.get("/v1/deals", params={"sort": sort, "cursor": encode_cursor([sort, value, str(uuid.uuid4())])})
        assert r.status_code == 422, (sort, r.status_code, r.text)
        assert r.json()["detail"] == keyset.BAD_CURSOR


async def test_an_amount_cursor_at_the_columns_bounds_pages_on(client: httpx.AsyncClient, make: Any) -> None:
    deal = await make.deal(amount="10.00")
    for sort, value, expected in (("-amount", MOST, [deal["id"]]), ("amount", "10.0", []), ("amount", "1E+1", [])):
        cursor = encode_cursor([sort, value, "ffffffff-ffff-ffff-ffff-ffffffffffff"])
        r = await client.get("/v1/deals", params={"sort": sort, "cursor": cursor})
        assert r.status_code == 200, r.text
        assert [d["id"] for d in r.json()["items"]] == expected


# --- an erase or a merge of the deal's customer meanwhile ----------------------------------------


async def test_a_deal_created_while_its_customer_is_merged_lands_on_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    """The duplicate was read unlocked while the merge held it: the deal went in on the duplicate
    once the merge was done, where no list of the survivor's deals nor its open value sees it."""
    survivor, duplicate = await make.customer(owner="kim"), await make.customer(owner="sam")
    await make.deal(survivor["id"], amount="100.00")
    post = functools.partial(
        client.post, "/v1/deals", json={"customer_id": duplicate["id"], "title": "Upsell", "amount": "50.00"}
    )
    answer = await sent_during(crm_app, merge(crm_app, survivor["id"], duplicate["id"]), post)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["customer_id"], answer.json()["owner"]) == (survivor["id"], "kim")
    assert (await client.get("/v1/deals", params={"customer_id": duplicate["id"]})).json()["items"] == []
    view = (await client.get(f"/v1/customers/{survivor['id']}/view")).json()
    assert view["open_deal_value"] == "150.00"


async def test_a_deal_created_while_its_customer_is_erased_is_refused_as_erased(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, events: Any
) -> None:
    customer = await make.customer()
    post = functools.partial(client.post, "/v1/deals", json={"customer_id": customer["id"], "title": "Renewal"})
    answer = await sent_during(crm_app, erase(crm_app, customer["id"]), post)
    assert answer.status_code == 422 and answer.json()["errors"][0]["msg"] == "erased", answer.text
    assert (await client.get("/v1/deals", params={"customer_id": customer["id"]})).json()["items"] == []
    assert [e["data"]["changed"] for e in await events("customer.updated")] == []


async def test_a_deal_opened_while_another_write_names_its_customer_neither_waits_nor_deadlocks(
    client: httpx.AsyncClient, make: Any, session_factory: Any, events: Any
) -> None:
    """Both hold the customer's shared reference lock (the one a foreign key takes); each then
    moves the customer's stage. Asked `FOR UPDATE`, each move waited for the other's shared lock."""
    customer = await make.customer(lifecycle_stage="lead")
    async with session_factory() as first:
        named = await customers.resolve_reference(first, uuid.UUID(customer["id"]))  # a deal being opened
        post = client.post("/v1/deals", json={"customer_id": customer["id"], "title": "Second"})
        answer = await asyncio.wait_for(post, timeout=5)
        assert answer.status_code == 201, answer.text
        assert await customers.advance_lifecycle(first, named, "opportunity", open_value_query) is False  # moved already
        await first.commit()
    moves = [e for e in await events("customer.updated") if e["data"]["changed"] == ["lifecycle_stage"]]
    assert [e["data"]["lifecycle_stage"] for e in moves] == ["opportunity"]


async def test_a_lifecycle_move_leaves_a_merged_or_erased_customer_alone(
    client: httpx.AsyncClient, make: Any, session_factory: Any, events: Any
) -> None:
    """The customer was read before it was merged away or erased (a deal or a conversion
    under way): its record changes no more, so no new version, history entry or event."""
    survivor, duplicate, erased = [await make.customer(lifecycle_stage="lead") for _ in range(3)]
    async with session_factory() as session:
        read_before = {c["id"]: await session.get(Customer, uuid.UUID(c["id"])) for c in (duplicate, erased)}
        session.expunge_all()
    assert (await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})).status_code == 200
    assert (await client.delete(f"/v1/customers/{erased['id']}")).status_code == 204
    announced = len(await events())
    for cid, stale in read_before.items():
        async with session_factory() as session:
            before = await session.scalar(select(Customer.version).where(Customer.id == uuid.UUID(cid)))
            assert await customers.advance_lifecycle(session, stale, "customer", open_value_query) is False
            await session.commit()
        async with session_factory() as session:
            after = await session.get(Customer, uuid.UUID(cid))
            assert (after.lifecycle_stage, after.version) == ("lead", before)
            changes = await session.scalars(select(CustomerChange.changes).where(CustomerChange.customer_id == uuid.UUID(cid)))
            assert not [c for c in changes if "lifecycle_stage" in c]
    assert len(await events()) == announced


async def _until_a_request_waits_on_a_lock(crm_app: FastAPI) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    while not await crm_app.state.pg_pool.fetchval(query):
        assert asyncio.get_running_loop().time() < deadline, "nothing waited on a lock"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("racing", ["merge", "erase"])
@pytest.mark.parametrize("change", ["amount", "won", "delete"])
async def test_a_deal_change_racing_a_merge_or_erase_of_its_customer_does_not_deadlock(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, monkeypatch: pytest.MonkeyPatch, change: str, racing: str
) -> None:
    """The change holds the deal, then asks for its customer (to move its stage or announce its
    open value); the merge (or erase) held the customers, then asked for the duplicate's deals
    (to move them, or blank their titles): each waited for the other, and PostgreSQL cancelled
    one (a 503). Opened wide: the change goes on to its customer once the other waits on a lock."""
    survivor, duplicate = await make.customer(), await make.customer(lifecycle_stage="lead")
    deal = await make.deal(duplicate["id"], amount="100.00")
    reached = asyncio.Event()

    def paused(step: Any) -> Any:
        async def then(*args: Any, **kwargs: Any) -> Any:
            reached.set()
            await _until_a_request_waits_on_a_lock(crm_app)
            return await step(*args, **kwargs)

        return then

    for step in ("announce_open_deal_value", "live_customer_or_none"):
        monkeypatch.setattr(customers, step, paused(getattr(customers, step)))
    path = f"/v1/deals/{deal['id']}"
    sent = asyncio.create_task(
        client.delete(path)
        if change == "delete"
        else client.patch(path, json={"amount": "250.00"} if change == "amount" else {"status": "won"})
    )
    await asyncio.wait_for(reached.wait(), timeout=10)
    other = asyncio.create_task(
        client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})
        if racing == "merge"
        else client.delete(f"/v1/customers/{duplicate['id']}")
    )
    answer, done = await asyncio.wait_for(asyncio.gather(sent, other), timeout=20)
    assert answer.status_code == (204 if change == "delete" else 200), answer.text
    assert done.status_code == (200 if racing == "merge" else 204), done.text
    if racing == "merge":
        kept = (await client.get("/v1/deals", params={"customer_id": survivor["id"]})).json()["items"]
        assert [d["id"] for d in kept] == ([] if change == "delete" else [deal["id"]])
        view = (await client.get(f"/v1/customers/{survivor['id']}/view")).json()
        assert view["open_deal_value"] == {"amount": "250.00", "won": "0.00", "delete": "0.00"}[change]
