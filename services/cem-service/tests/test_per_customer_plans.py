"""A customer's lists and experience view cost the same at any page and for any customer: the
statements the API runs are index range scans in the order they are read, reading only the
rows they return (no sort above them, nothing read and dropped), whether PostgreSQL plans them
for the values at hand or once for any values (as it may for the app's prepared statements).
Checked with EXPLAIN ANALYZE on the very statements, captured from the app's engine."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI

from cxkit.pg_pool import asyncpg_dsn
from cxkit.testing import plan_nodes, statements_sent

from .heavy_seed import HeavyCustomer, seed_heavy_customer

PAGE = 10
DEPTH = 20  # the page whose plan is checked as well as the first


async def plans(dsn: str, statement: str, parameters: Any) -> dict[str, dict[str, Any]]:
    """The executed plan of a statement as planned for its values ("custom") and for any values
    ("generic"). Sequential and bitmap scans are off: the test's tables are small, so reading
    them whole would rightly win; the question is whether an index serves the page in order."""
    args = list(parameters or ())
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            custom = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, *args)
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute("PREPARE page AS " + statement)
            # EXPLAIN EXECUTE takes no parameters: the values go in as literals, typed by the statement.
            literals = ", ".join("NULL" if a is None else "'" + str(a).replace("'", "''") + "'" for a in args)
            generic = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({literals})")
            await conn.execute("DEALLOCATE page")
    finally:
        await conn.close()
    return {"custom": orjson.loads(custom)[0]["Plan"], "generic": orjson.loads(generic)[0]["Plan"]}


def assert_reads_only_what_it_returns(plan: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """No sort or aggregate, every scan an index scan that read at most one row more than a page
    and dropped none. Returns the scans."""
    kinds = [n["Node Type"] for n in plan_nodes(plan)]
    assert not [k for k in kinds if "Sort" in k or "Aggregate" in k], kinds
    scans = [n for n in plan_nodes(plan) if "Scan" in n["Node Type"]]
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
        assert scan["Actual Rows"] * scan["Actual Loops"] <= limit + 1, scan
        assert scan.get("Rows Removed by Filter", 0) == 0, scan
        assert scan.get("Rows Removed by Index Recheck", 0) == 0, scan
    return scans


@pytest.fixture(scope="module")
async def heavy(module_client: httpx.AsyncClient, cem_database_url: str) -> HeavyCustomer:
    """A customer with more than 20 pages of everything, among many others, seeded once for the
    module's tests (they only read). Most of their invitations are to a second survey: listing the
    first survey's to them must not read those."""
    conn = await asyncpg.connect(asyncpg_dsn(cem_database_url))
    try:
        rows = {"visits": 300, "invitations": 250, "responses": 150, "feedback": 300, "suppressions": 150}
        customer = await seed_heavy_customer(conn, **rows)
        await seed_heavy_customer(conn, customer.customer_id, survey_id=uuid.uuid4(), **{**rows, "invitations": 1000})
        # Others own most of every table, as they would (their rows interleave with theirs in time).
        for _ in range(20):
            await seed_heavy_customer(
                conn, survey_id=uuid.uuid4(), visits=150, invitations=150, responses=150, feedback=150, suppressions=150
            )
        await conn.execute("ANALYZE touchpoint_interactions, invitations, responses, scores, feedback, followups, suppressions")
    finally:
        await conn.close()
    return customer


LISTS = {
    "responses": ("/v1/responses?customer_id={customer}", "responses", "ix_responses_customer_submitted_id"),
    "invitations": (
        "/v1/surveys/{survey}/invitations?customer_id={customer}",
        "invitations",
        "ix_invitations_survey_customer_created_id",
    ),
    "feedback": ("/v1/feedback?customer_id={customer}", "feedback", "ix_feedback_customer_received_id"),
    "suppressions": ("/v1/suppressions?customer_id={customer}", "suppressions", "ix_suppressions_customer_created_id"),
}


@pytest.mark.parametrize("name", list(LISTS))
async def test_a_customers_list_pages_are_index_range_scans_at_any_depth(
    name: str, module_client: httpx.AsyncClient, cem_app: FastAPI, cem_database_url: str, heavy: HeavyCustomer
) -> None:
    path, table, index = LISTS[name]
    url = path.format(customer=heavy.customer_id, survey=heavy.survey_id) + f"&limit={PAGE}"
    cursor = None
    for page in range(1, DEPTH + 1):
        with statements_sent(cem_app) as seen:
            r = await module_client.get(url + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == PAGE
        if page in (1, DEPTH):
            [(statement, parameters)] = [(s, p) for s, p in seen if f"FROM {table}" in s and "ORDER BY" in s]
            for kind, plan in (await plans(asyncpg_dsn(cem_database_url), statement, parameters)).items():
                scans = assert_reads_only_what_it_returns(plan, PAGE)
                [main] = [s for s in scans if s["Relation Name"] == table]
                assert main["Index Name"] == index, (kind, page, main)
                assert main["Actual Rows"] == PAGE + 1, (kind, page, main)
                if page == DEPTH:  # the cursor is where the index scan starts, not a filter
                    assert "ROW(" in main["Index Cond"], (kind, main)
        cursor = r.json()["next_cursor"]


async def test_the_experience_view_is_one_statement_reading_a_page_of_each_list_and_one_row_of_totals(
    module_client: httpx.AsyncClient, cem_app: FastAPI, cem_database_url: str, heavy: HeavyCustomer
) -> None:
    limit = 20
    with statements_sent(cem_app) as seen:
        r = await module_client.get(f"/v1/customers/{heavy.customer_id}/experience", params={"limit": limit})
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["summary"]["responses"] == 300 and len(view["touchpoint_history"]) == limit
    read = set()
    selects = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT") and "api_keys" not in s]
    assert len(selects) == 1, [s[:80] for s, _ in selects]  # one round trip
    for statement, parameters in selects:
        for plan in (await plans(asyncpg_dsn(cem_database_url), statement, parameters)).values():
            read |= {s["Index Name"] for s in assert_reads_only_what_it_returns(plan, limit)}
    assert {
        "pk_customer_profiles",
        "pk_customer_experience_totals",
        "ix_touchpoint_interactions_customer_occurred_interaction",
        "ix_invitations_customer_created_id",
        "ix_responses_customer_submitted_id",
        "ix_scores_customer_metric_submitted_response",
        "ix_feedback_customer_received_id",
        "ix_followups_customer_created_id",
        "ix_suppressions_customer_created_id",
    } <= read, read
