"""Issue 14: what one customer's page costs does not grow with that customer's history. The
per-customer lists run as index range scans in the order they are served (no sort of the
customer's rows), so a page costs the same at any depth; the view reads kept statistics."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI

from crm.customer_view.repository import page_query
from crm.customer_view.schemas import TIMELINE_KINDS
from cxkit.testing import plan_nodes, statements_sent


async def priced_out(conn: asyncpg.Connection) -> None:
    """Scans that are not by index, and sorts, priced out for the transaction: what a plan then
    shows is whether an index alone yields the rows in the order served (tables are tiny here,
    so the planner would otherwise rightly prefer to read them whole and sort)."""
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_incremental_sort"):
        await conn.execute(f"SET LOCAL {setting} = off")


async def plan_of(app: FastAPI, statement: str, parameters: tuple[Any, ...], *, analyze: bool = False) -> list[dict[str, Any]]:
    """The plan's nodes for the statement (see `priced_out`); `analyze`: executed, with the rows
    each node read."""
    async with app.state.pg_pool.acquire() as conn, conn.transaction():
        await priced_out(conn)
        raw = await conn.fetchval(f"EXPLAIN ({'ANALYZE, ' if analyze else ''}FORMAT JSON) " + statement, *parameters)
    plan = (orjson.loads(raw) if isinstance(raw, str | bytes) else raw)[0]["Plan"]
    return list(plan_nodes(plan))


@pytest.mark.parametrize(
    ("path", "table", "index"),
    [
        ("/v1/interactions?customer_id={id}&limit=2", "interactions", "ix_interactions_customer_id_occurred_at_id"),
        ("/v1/tasks?customer_id={id}&limit=2&sort=-created_at", "tasks", "ix_tasks_customer_id_created_at_id"),
        ("/v1/tasks?customer_id={id}&limit=2&sort=created_at", "tasks", "ix_tasks_customer_id_created_at_id"),
        ("/v1/deals?customer_id={id}&limit=2", "deals", "ix_deals_customer_id_created_at_id"),
    ],
)
async def test_a_customers_list_page_is_an_index_range_scan_at_any_depth(
    crm_app: FastAPI, client: httpx.AsyncClient, make: Any, path: str, table: str, index: str
) -> None:
    customer = await make.customer()
    for _ in range(3):
        await make.interaction(customer_id=customer["id"], type="call")
        await make.task(customer["id"])
        await make.deal(customer["id"])
    url = path.format(id=customer["id"])
    first = await client.get(url)
    assert first.status_code == 200, first.text
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    for page_url in (url, f"{url}&cursor={cursor}"):
        with statements_sent(crm_app) as seen:
            assert (await client.get(page_url)).status_code == 200
        (statement, parameters) = next((s, p) for s, p in seen if f"FROM {table}" in s and "LIMIT" in s)
        plan = await plan_of(crm_app, statement, parameters)
        kinds = [n["Node Type"] for n in plan]
        assert "Sort" not in kinds and "Incremental Sort" not in kinds, kinds
        assert any(n.get("Index Name") == index for n in plan), [(n["Node Type"], n.get("Index Name")) for n in plan]


async def test_the_timeline_reads_each_kind_by_index_and_merges_only_a_page(crm_app: FastAPI, make: Any) -> None:
    customer = await make.customer()
    cursor = (dt.datetime.now(dt.UTC), "interaction", uuid.uuid4())
    query = page_query(tuple(sorted(TIMELINE_KINDS)), cursor[1])
    async with crm_app.state.pg_pool.acquire() as conn, conn.transaction():
        await priced_out(conn)
        plan = list(
            plan_nodes(
                await query.explain(conn, customer_id=uuid.UUID(customer["id"]), at=cursor[0], entry_id=cursor[2], limit=3)
            )
        )
    shown = "\n".join(f"{n['Node Type']} {n.get('Index Name')}" for n in plan)
    # Every branch stops after a page's worth (a Limit over an index scan); what is sorted is
    # the merge of those few rows at the top, and a deal's stage changes (they are found
    # through the customer's deals, so their own order needs one sort of that customer's).
    assert [n["Node Type"] for n in plan].count("Limit") >= len(TIMELINE_KINDS), shown
    assert [n["Node Type"] for n in plan].count("Sort") <= 2, shown
    assert not any(n["Node Type"] == "Seq Scan" for n in plan), shown
    assert {n.get("Index Name") for n in plan} >= {
        "ix_interactions_customer_id_occurred_at_id",
        "ix_experience_events_customer_id_kind_occurred_at_id",
        "ix_tasks_customer_id_created_at_id",
        "ix_tasks_customer_id_completed_at_id",
        "ix_documents_customer_id_created_at_id",
        "ix_customer_changes_customer_id_changed_at_id",
    }, shown


@pytest.mark.parametrize(
    ("path", "table", "index", "field"),
    [
        ("/v1/customers?sort=name&limit=2", "customers", "ix_customers_name_id", "name"),
        ("/v1/customers?sort=-name&limit=2", "customers", "ix_customers_name_id", "name"),
        ("/v1/tasks?customer_id={id}&sort=due_at&limit=2", "tasks", "ix_tasks_customer_id_due_at_id", "due_at"),
        ("/v1/tasks?customer_id={id}&sort=-due_at&limit=2", "tasks", "ix_tasks_customer_id_due_at_id", "due_at"),
        ("/v1/deals?sort=amount&limit=2", "deals", "ix_deals_amount_id", "amount"),
        ("/v1/deals?sort=-amount&limit=2", "deals", "ix_deals_amount_id", "amount"),
    ],
)
async def test_a_list_by_a_key_some_rows_lack_reads_only_its_page_at_any_depth(
    crm_app: FastAPI, client: httpx.AsyncClient, make: Any, path: str, table: str, index: str, field: str
) -> None:
    """Sorted by a field some rows leave empty (those come last either way), every page reads only
    the rows it returns from the index, in order (backwards for a descending sort, with no sort of
    every row): the cursor is where the scan starts, also when the page runs from the last rows
    with a value into the empty ones (a second statement reads those)."""
    owner = await make.customer(name="Owner")
    for n in range(5):
        value = {"name": f"Name {n % 3}", "due_at": f"2026-12-0{n % 3 + 1}T09:00:00Z", "amount": str(100 * (n % 3))}[field]
        if table == "customers":
            await make.customer(name=value)
        elif table == "tasks":
            await make.task(owner["id"], due_at=value)
        else:
            await make.deal(owner["id"], amount=value, currency="EUR")
    for _ in range(2):
        if table == "customers":  # as a lead the CRM made from an interaction event's email has none
            nameless = await make.customer()
            async with crm_app.state.pg_pool.acquire() as conn:
                await conn.execute("UPDATE customers SET name = NULL WHERE id = $1", uuid.UUID(nameless["id"]))
        elif table == "tasks":
            await make.task(owner["id"])
        else:
            await make.deal(owner["id"])
    url, cursor, listed = path.format(id=owner["id"]), None, []
    while True:
        with statements_sent(crm_app) as seen:
            r = await client.get(url + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200, r.text
        listed += [item[field] for item in r.json()["items"]]
        for statement, parameters in [(s, p) for s, p in seen if f"FROM {table}" in s and "LIMIT" in s]:
            plan = await plan_of(crm_app, statement, parameters, analyze=True)
            assert not [n for n in plan if "Sort" in n["Node Type"]], statement
            [scan] = [n for n in plan if n.get("Relation Name") == table]
            assert scan.get("Index Name") == index, (statement, scan)
            assert scan.get("Rows Removed by Filter", 0) == 0 and scan["Actual Rows"] <= 3, (statement, scan)
        if (cursor := r.json()["next_cursor"]) is None:
            break
    assert len(listed) == (8 if table == "customers" else 7) and listed[-2:] == [None, None]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("status=open", "ix_tasks_status_due_at_id"),
        ("status=open&due_before=2026-12-20T00:00:00Z", "ix_tasks_status_due_at_id"),
        ("status=open&sort=-due_at", "ix_tasks_status_due_at_id"),
        ("owner=sam@yourcompany.example&status=open", "ix_tasks_owner_status_due_at_id"),
    ],
)
async def test_the_open_tasks_by_due_time_read_only_their_page_past_any_number_of_completed_ones(
    crm_app: FastAPI, client: httpx.AsyncClient, make: Any, query: str, index: str
) -> None:
    """The to-do list (`status=open`, by due time, the default sort), the overdue list and a rep's
    queue read the open tasks alone, in order: not a walk over every task by due time that drops
    the completed ones (most of them, and the oldest)."""
    customer = await make.customer()
    owner = "sam@yourcompany.example"
    for day in range(1, 7):  # completed long ago, due first
        task = await make.task(customer["id"], due_at=f"2026-11-0{day}T09:00:00Z", owner=owner)
        done = await client.patch(f"/v1/tasks/{task['id']}", json={"status": "completed"})
        assert done.status_code == 200, done.text
    for day in range(10, 16):
        await make.task(customer["id"], due_at=f"2026-12-{day}T09:00:00Z", owner=owner)
    await make.task(customer["id"], owner=owner)  # no due time: last
    cursor, listed = None, 0
    while True:
        with statements_sent(crm_app) as seen:
            r = await client.get(f"/v1/tasks?{query}&limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200, r.text
        assert {item["status"] for item in r.json()["items"]} <= {"open"}
        listed += len(r.json()["items"])
        for statement, parameters in [(s, p) for s, p in seen if "FROM tasks" in s and "LIMIT" in s]:
            plan = await plan_of(crm_app, statement, parameters, analyze=True)
            [scan] = [n for n in plan if n.get("Relation Name") == "tasks"]
            assert scan.get("Index Name") == index, (statement, scan)
            assert scan.get("Rows Removed by Filter", 0) == 0 and scan["Actual Rows"] <= 3, (statement, scan)
        if (cursor := r.json()["next_cursor"]) is None:
            break
    assert listed == (6 if "due_before" in query else 7)


async def test_the_open_deals_by_expected_close_date_read_only_their_page_past_the_closed_ones(
    crm_app: FastAPI, client: httpx.AsyncClient, make: Any
) -> None:
    """The forecast (`status=open&sort=expected_close_date`, and backwards) reads the open deals
    alone, in order: not a walk over every deal by close date that drops the won and lost ones."""
    customer = await make.customer()
    for day in range(1, 7):  # closed long ago, first by date
        deal = await make.deal(customer["id"], expected_close_date=f"2026-11-0{day}")
        status = "won" if day % 2 else "lost"
        closed = await client.patch(
            f"/v1/deals/{deal['id']}", json={"status": status, "lost_reason": "Price"} if status == "lost" else {"status": status}
        )
        assert closed.status_code == 200, closed.text
    for day in range(10, 16):
        await make.deal(customer["id"], expected_close_date=f"2026-12-{day}")
    await make.deal(customer["id"])  # no expected close date: last
    for sort in ("expected_close_date", "-expected_close_date"):
        cursor, listed = None, []
        while True:
            with statements_sent(crm_app) as seen:
                r = await client.get(f"/v1/deals?status=open&sort={sort}&limit=2" + (f"&cursor={cursor}" if cursor else ""))
            assert r.status_code == 200, r.text
            listed += [item["expected_close_date"] for item in r.json()["items"]]
            for statement, parameters in [(s, p) for s, p in seen if "FROM deals" in s and "LIMIT" in s]:
                plan = await plan_of(crm_app, statement, parameters, analyze=True)
                [scan] = [n for n in plan if n.get("Relation Name") == "deals"]
                assert scan.get("Index Name") == "ix_deals_status_expected_close_date_id", (statement, scan)
                assert scan.get("Rows Removed by Filter", 0) == 0 and scan["Actual Rows"] <= 3, (statement, scan)
            if (cursor := r.json()["next_cursor"]) is None:
                break
        dated = [f"2026-12-{day}" for day in range(10, 16)]
        assert listed == (dated if sort == "expected_close_date" else dated[::-1]) + [None], sort
