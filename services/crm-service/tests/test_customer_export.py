"""GET /v1/customers/export: the list's customers as a streamed, spreadsheet-safe CSV."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crm.customers.schemas import CustomerRead
from crm.db import ApiKey
from cxkit import testing
from cxkit.http import csv_export
from cxkit.http.csv_export import cell
from cxkit.testing import bearer

HEADER = list(CustomerRead.model_fields)


def rows_of(response: httpx.Response) -> list[dict[str, str]]:
    return testing.csv_records(response, HEADER)


async def test_export_has_the_same_customers_in_the_same_order_as_the_paged_list(client: httpx.AsyncClient, make: Any) -> None:
    campaign = await make.campaign()
    for n in range(5):
        await make.customer(name=f"Vip {n}", tags=["vip"], owner="kim", lifecycle_stage="customer")
    await make.customer(name="Vip but lead", tags=["vip"], owner="kim")
    await make.customer(name="Other owner", tags=["vip"], owner="sam", lifecycle_stage="customer")
    await make.customer(name="From a campaign", campaign_id=campaign["id"])
    merged = await make.customer(name="Vip duplicate", tags=["vip"], owner="kim", lifecycle_stage="customer")
    survivor = await make.customer(name="Vip survivor", tags=["vip"], owner="kim", lifecycle_stage="customer")
    merge = await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": merged["id"]})
    assert merge.status_code == 200, merge.text
    erased = await make.customer(name="Vip erased", tags=["vip"], owner="kim", lifecycle_stage="customer")
    assert (await client.delete(f"/v1/customers/{erased['id']}")).status_code == 204

    for query in (
        "tag=vip&owner=kim&lifecycle_stage=customer",
        "q=vip&sort=name",
        f"campaign_id={campaign['id']}",
        "sort=-email",
        "",
    ):
        exported = [r["id"] for r in rows_of(await client.get(f"/v1/customers/export?{query}"))]
        assert exported == await testing.paged_ids(client, "/v1/customers", query), query
    chosen = [r["id"] for r in rows_of(await client.get("/v1/customers/export?tag=vip&owner=kim&lifecycle_stage=customer"))]
    assert len(chosen) == 6 and merged["id"] not in chosen and erased["id"] not in chosen


async def test_export_answers_a_csv_attachment_with_the_read_fields(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer(
        email="Ada@Example.com", name="Ada", tags=["vip", "b2b"], attributes={"plan": "pro", "seats": 3}, phone="555"
    )
    response = await client.get("/v1/customers/export")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="customers-\d{8}T\d{6}Z\.csv"', response.headers["content-disposition"])
    (row,) = rows_of(response)
    read = (await client.get(f"/v1/customers/{customer['id']}")).json()
    assert row["id"] == read["id"] and row["email"] == read["email"] == "Ada@example.com" and row["name"] == "Ada"
    assert row["tags"] == "b2b;vip" and row["attributes"] == '{"plan":"pro","seats":3}'
    assert row["version"] == "1" and row["survey_opt_out"] == "false" and row["company"] == row["erased_at"] == ""
    assert row["created_at"].startswith(read["created_at"][:19])


async def test_export_with_no_match_is_the_header_alone(client: httpx.AsyncClient, make: Any) -> None:
    await make.customer()
    response = await client.get("/v1/customers/export?q=nothing-like-this")
    assert response.content == (",".join(HEADER) + "\r\n").encode()


async def test_export_quotes_commas_quotes_and_newlines(client: httpx.AsyncClient, make: Any) -> None:
    await make.customer(name='Ada "the first", Countess\nof Lovelace', company="Engines, Ltd")
    (row,) = rows_of(await client.get("/v1/customers/export"))
    assert row["name"] == 'Ada "the first", Countess\nof Lovelace' and row["company"] == "Engines, Ltd"
    assert b'"Ada ""the first"", Countess\nof Lovelace"' in (await client.get("/v1/customers/export")).content


async def test_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(client: httpx.AsyncClient, make: Any) -> None:
    await make.customer(
        name='=HYPERLINK("http://evil.example","x")',
        company="+1+cmd|' /C calc'!A0",
        phone="-2+3",
        owner="@SUM(A1:A2)",
        source="\tsneaky",
        tags=["=1+1", "safe"],
        attributes={"a": "=1"},
    )
    (row,) = rows_of(await client.get("/v1/customers/export"))
    assert row["name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert row["company"] == "'+1+cmd|' /C calc'!A0"
    assert row["phone"] == "'-2+3" and row["owner"] == "'@SUM(A1:A2)" and row["source"] == "'\tsneaky"
    assert row["tags"] == "'=1+1;safe"
    assert row["attributes"] == '{"a":"=1"}'  # begins with `{`: text to a spreadsheet already
    assert row["version"] == "1"  # a number stays a number


async def test_export_refuses_bad_filters_with_422(client: httpx.AsyncClient) -> None:
    for query in ("lifecycle_stage=astronaut", "campaign_id=nope", "sort=password", "q="):
        response = await client.get(f"/v1/customers/export?{query}")
        assert response.status_code == 422, query
        assert response.headers["content-type"] == "application/problem+json"


async def test_export_needs_a_key_with_the_read_scope(client: httpx.AsyncClient, keys: dict[str, str], crm_app: FastAPI) -> None:
    assert (await client.get("/v1/customers/export", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/customers/export", headers=bearer(keys["revoked"]))).status_code == 401
    assert (await client.get("/v1/customers/export", headers=bearer(keys["read"]))).status_code == 200
    plaintext = await testing.key_without_read_scope(crm_app.state.session_factory, ApiKey)
    for path in ("/v1/customers", "/v1/customers/export"):
        forbidden = await client.get(path, headers=bearer(plaintext))
        assert forbidden.status_code == 403 and forbidden.headers["content-type"] == "application/problem+json", path


async def test_export_is_documented_as_text_csv_with_an_example(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/customers/export"]["get"]
    assert operation["summary"] and operation["tags"] == ["customers"]
    example = operation["responses"]["200"]["content"]["text/csv"]["example"]
    assert example.startswith(",".join(HEADER) + "\r\n")
    assert {"401", "403", "422", "503"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} >= {"q", "lifecycle_stage", "tag", "owner", "campaign_id", "sort"}


BULK = 200_000


async def bulk_customers(crm_app: FastAPI, n: int) -> None:
    """`n` customers in one statement, a few with formula-like names."""
    async with crm_app.state.pg_pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO customers (id, email, email_normalized, name, company, lifecycle_stage, owner, tags,
                                   attributes, source, survey_opt_out, version, created_at, updated_at)
            SELECT gen_random_uuid(), 'bulk' || g || '@example.com', 'bulk' || g || '@example.com',
                   CASE WHEN g % 1000 = 0 THEN '=cmd' || g ELSE 'Bulk customer ' || g END,
                   'Company, ' || (g % 100), 'lead', 'kim', '["bulk", "vip"]'::jsonb,
                   jsonb_build_object('n', g, 'note', 'a "quoted" value'), 'load', false, 1,
                   now() - g * interval '1 second', now() - g * interval '1 second'
            FROM generate_series(1, $1::int) AS g
            """,
            n,
        )


async def test_export_streams_200k_customers_in_constant_memory(
    client: httpx.AsyncClient, crm_app: FastAPI, keys: dict[str, str]
) -> None:
    await bulk_customers(crm_app, BULK)
    started = time.monotonic()
    seen = await testing.stream_measured(crm_app, "/v1/customers/export?tag=vip", bearer(keys["read"]))
    assert seen.status == 200 and seen.line_ends == BULK + 1  # no cell here holds a line end
    assert seen.parts >= BULK // 2_000  # sent in chunks as they are read, not at the end
    # The body is bigger than the memory the process ever grew by.
    assert seen.size > 30 * 2**20 and seen.growth_bytes < 30 * 2**20, seen
    assert time.monotonic() - started < 60


async def bulk_customers_with_big_attributes(crm_app: FastAPI, n: int) -> None:
    """`n` customers whose attributes are ~14 KiB of JSON each (220 keys; under MAX_JSON_BYTES),
    a little non-ASCII text in each."""
    async with crm_app.state.pg_pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO customers (id, email, email_normalized, name, company, lifecycle_stage, owner, tags,
                                   attributes, source, survey_opt_out, version, created_at, updated_at)
            SELECT gen_random_uuid(), 'big' || g || '@example.com', 'big' || g || '@example.com', 'Big customer ' || g,
                   'Company ' || (g % 100), 'lead', 'kim', '["big"]'::jsonb,
                   (SELECT jsonb_object_agg('attribute_' || k, 'valeur été ' || g || ' ' || repeat('v', 30))
                    FROM generate_series(1, 220) AS k),
                   'load', false, 1, now() - g * interval '1 second', now() - g * interval '1 second'
            FROM generate_series(1, $1::int) AS g
            """,
            n,
        )


async def test_export_of_customers_with_big_attributes_stays_in_constant_memory(
    client: httpx.AsyncClient, crm_app: FastAPI, keys: dict[str, str]
) -> None:
    """A batch is bounded by bytes as well as rows: 2,000 customers of ~14 KiB attributes made
    one batch of hundreds of MB (records, cells, the CSV text and its bytes at once)."""
    n = 4_000
    await bulk_customers_with_big_attributes(crm_app, n)
    seen = await testing.stream_measured(crm_app, "/v1/customers/export?tag=big", bearer(keys["read"]))
    assert seen.status == 200 and seen.line_ends == n + 1  # no cell here holds a line end
    assert seen.size > 50 * 2**20 and seen.growth_bytes < 40 * 2**20, seen
    assert seen.parts >= seen.size // 2**20  # parts of about a MiB at most


async def test_export_gives_its_connection_back_when_the_client_goes_away(
    client: httpx.AsyncClient, crm_app: FastAPI, keys: dict[str, str]
) -> None:
    await bulk_customers(crm_app, 20_000)
    status, _ = await testing.stream_get(
        crm_app, "/v1/customers/export", bearer(keys["read"]), lambda chunk: None, disconnect_after=3
    )
    assert status == 200
    released = await testing.settles(lambda: _nothing_held(crm_app))
    assert released, await _activity(crm_app)
    assert (await client.get("/v1/customers/export?q=bulk1999")).status_code == 200


async def _activity(crm_app: FastAPI) -> Any:
    pool = crm_app.state.pg_pool
    async with pool.acquire() as conn:
        states = await conn.fetch("SELECT state, query FROM pg_stat_activity WHERE datname = current_database()")
    return pool.get_size(), pool.get_idle_size(), [tuple(r) for r in states]


async def _nothing_held(crm_app: FastAPI) -> bool:
    pool = crm_app.state.pg_pool
    async with pool.acquire() as conn:
        open_ones: Any = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
        )
    return bool(open_ones == 0 and pool.get_size() == pool.get_idle_size())


async def test_other_methods_on_the_export_are_405_not_taken_for_a_customer_id(client: httpx.AsyncClient) -> None:
    for method in ("PATCH", "DELETE", "POST", "PUT", "OPTIONS", "QUERY", "PROPFIND"):
        response = await client.request(method, "/v1/customers/export", json={})
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "GET" and response.headers["content-type"] == "application/problem+json"
    assert (await client.patch(f"/v1/customers/{uuid.uuid4()}", json={"name": "x"})).status_code == 404


async def test_head_answers_as_get_without_the_body_on_the_export_a_customer_and_health(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    """RFC 9110 9.3.2: HEAD is served wherever GET is, with the GET's status and headers and no
    body (it was a 405 naming every method but HEAD on the export, and a bare 405 elsewhere)."""
    customer = await make.customer(name="Head")
    for path in ("/v1/customers/export", f"/v1/customers/{customer['id']}", "/health"):
        got, head = await client.get(path), await client.head(path)
        assert got.status_code == 200 and head.status_code == 200, (path, head.status_code, head.headers)
        assert head.content == b"" and "x-request-id" in head.headers and "allow" not in head.headers
        for name in ("content-type", "content-disposition", "etag", "ratelimit-policy"):
            if name in got.headers:
                assert head.headers[name].split(";")[0] == got.headers[name].split(";")[0], (path, name)
    assert head.headers["content-type"] == "application/json"
    assert (await client.head(f"/v1/customers/{uuid.uuid4()}")).status_code == 404
    assert (await client.head("/v1/customers/export", headers={"Authorization": "Bearer cx_unknown"})).status_code == 401
    assert await testing.settles(lambda: _nothing_held(crm_app)), await _activity(crm_app)  # the export's cursor closed


async def test_head_on_the_export_reads_the_first_batch_only_and_gives_the_connection_back(
    client: httpx.AsyncClient, crm_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEAD used to run the whole export (every row read, a pool connection held) and drop the
    body; the answer now ends with its headers, and the cursor is closed at once."""
    await bulk_customers(crm_app, 20_000)
    cells = 0

    def counted(value: Any) -> Any:
        nonlocal cells
        cells += 1
        return cell(value)

    monkeypatch.setattr(csv_export, "cell", counted)
    head = await client.head("/v1/customers/export")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "text/csv; charset=utf-8"
    assert cells // len(HEADER) <= csv_export.CHUNK_ROWS, cells // len(HEADER)  # not 20,000
    assert await _nothing_held(crm_app), await _activity(crm_app)  # released before the answer ended
    monkeypatch.undo()
    assert len(rows_of(await client.get("/v1/customers/export"))) == 20_000
