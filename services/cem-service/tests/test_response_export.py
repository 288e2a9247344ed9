"""GET /v1/responses/export: the list's answers as a streamed, spreadsheet-safe CSV."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from cem.db import ApiKey
from cem.responses.repository import EXPORT_HEADER
from cxkit import testing
from cxkit.testing import bearer

HEADER = list(EXPORT_HEADER)


def rows_of(response: httpx.Response) -> list[dict[str, str]]:
    return testing.csv_records(response, HEADER)


async def test_export_has_the_same_answers_in_the_same_order_as_the_paged_list(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    await make.touchpoint("support")
    nps, csat = await make.survey("nps"), await make.survey("csat")
    customer = str(await make.customer())
    for day in range(1, 6):
        await make.answer(nps["id"], {"nps": day}, customer_id=customer, submitted_at=f"2026-11-0{day}T10:00:00Z")
        await make.answer(nps["id"], {"nps": 10 - day}, touchpoint="support", submitted_at=f"2026-11-0{day}T11:00:00Z")
        await make.answer(csat["id"], {"csat": 1 + day % 5}, submitted_at=f"2026-11-0{day}T12:00:00Z")

    for params in (
        {"survey_id": nps["id"]},
        {"customer_id": customer},
        {"touchpoint": "support", "from": "2026-11-02T00:00:00Z", "to": "2026-11-04T00:00:00Z"},
        {},
    ):
        exported = [r["response_id"] for r in rows_of(await client.get("/v1/responses/export", params=params))]
        assert exported == await testing.paged_ids(client, "/v1/responses", params), params
    window = rows_of(
        await client.get("/v1/responses/export", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T00:00:00Z"})
    )
    assert len(window) == 3


async def test_export_lines_carry_the_score_and_the_answers(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    customer = str(await make.customer())
    answer = await make.answer(survey["id"], {"nps": 3, "reason": 'Slow, "very" slow\nand late'}, customer_id=customer)
    custom = await make.survey("custom", questions=[{"id": "why", "type": "text", "text": "Why?"}])
    unscored = await make.answer(custom["id"], {"why": "@home"}, email="walk-in@example.net")
    response = await client.get("/v1/responses/export")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="responses-\d{8}T\d{6}Z\.csv"', response.headers["content-disposition"])
    rows = {r["response_id"]: r for r in rows_of(response)}
    row = rows[answer["id"]]
    assert (row["survey_id"], row["customer_id"], row["touchpoint"], row["source"]) == (survey["id"], customer, "", "api")
    assert (row["metric"], row["score"], row["scale_min"], row["scale_max"], row["category"]) == (
        "nps",
        "3",
        "0",
        "10",
        "detractor",
    )
    assert row["answers"] == '{"nps":3,"reason":"Slow, \\"very\\" slow\\nand late"}'
    assert row["submitted_at"].startswith(answer["submitted_at"][:19])
    empty = rows[unscored["id"]]  # a survey that measures nothing: no score
    assert (empty["email"], empty["metric"], empty["score"], empty["category"]) == ("walk-in@example.net", "", "", "")
    assert empty["answers"] == '{"why":"@home"}'


async def test_export_neutralises_text_cells_and_keeps_numbers(client: httpx.AsyncClient, make: Any, cem_app: FastAPI) -> None:
    survey = await make.survey("nps")
    answer = await make.answer(survey["id"], {"nps": 9, "reason": "=1+1"})
    async with cem_app.state.pg_pool.acquire() as conn:  # what an older import may have stored
        await conn.execute(
            "UPDATE responses SET touchpoint = '@SUM(A1)', email = '-x@example.com' WHERE id = $1", uuid.UUID(answer["id"])
        )
        await conn.execute("UPDATE scores SET score = -2, category = '+cat' WHERE response_id = $1", uuid.UUID(answer["id"]))
    (row,) = rows_of(await client.get("/v1/responses/export"))
    assert row["touchpoint"] == "'@SUM(A1)" and row["email"] == "'-x@example.com" and row["category"] == "'+cat"
    assert row["score"] == "-2"  # a number from the database: left a number
    assert row["answers"] == '{"nps":9,"reason":"=1+1"}'  # begins with `{`: text to a spreadsheet


async def test_export_refuses_bad_filters_with_422(client: httpx.AsyncClient) -> None:
    for params in (
        {"survey_id": "nope"},
        {"from": "yesterday"},
        {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"touchpoint": "x" * 101},
    ):
        response = await client.get("/v1/responses/export", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"


async def test_export_needs_a_key_with_the_read_scope(client: httpx.AsyncClient, keys: dict[str, str], cem_app: FastAPI) -> None:
    assert (await client.get("/v1/responses/export", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/responses/export", headers=bearer(keys["revoked"]))).status_code == 401
    assert (await client.get("/v1/responses/export", headers=bearer(keys["read"]))).status_code == 200
    plaintext = await testing.key_without_read_scope(cem_app.state.session_factory, ApiKey)
    forbidden = await client.get("/v1/responses/export", headers=bearer(plaintext))
    assert forbidden.status_code == 403 and forbidden.headers["content-type"] == "application/problem+json"


async def test_export_is_documented_as_text_csv_with_an_example(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/responses/export"]["get"]
    assert operation["summary"] and operation["tags"] == ["responses"]
    assert operation["responses"]["200"]["content"]["text/csv"]["example"].startswith(",".join(HEADER) + "\r\n")
    assert {"401", "403", "422", "503"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} >= {"survey_id", "customer_id", "touchpoint", "from", "to"}


BULK = 200_000


async def test_export_streams_200k_answers_in_constant_memory(
    client: httpx.AsyncClient, make: Any, cem_app: FastAPI, keys: dict[str, str]
) -> None:
    survey = await make.survey("nps")
    async with cem_app.state.pg_pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO responses (id, survey_id, source, answers, submitted_at, recorded_at)
            SELECT gen_random_uuid(), $1, 'api',
                   jsonb_build_array(jsonb_build_object('question_id', 'nps', 'type', 'rating', 'text', 'Recommend?',
                                                        'value', g % 11, 'scale_min', 0, 'scale_max', 10),
                                     jsonb_build_object('question_id', 'reason', 'type', 'text', 'text', 'Why?',
                                                        'value', 'reason number ' || g)),
                   now() - g * interval '1 second', now()
            FROM generate_series(1, $2::int) AS g
            """,
            uuid.UUID(survey["id"]),
            BULK,
        )
        await conn.execute(
            """
            INSERT INTO scores (response_id, survey_id, metric, score, scale_min, scale_max, category, submitted_at, submitted_on)
            SELECT id, survey_id, 'nps', (answers -> 0 ->> 'value')::int, 0, 10, 'passive', submitted_at, submitted_at::date
            FROM responses WHERE survey_id = $1
            """,
            uuid.UUID(survey["id"]),
        )
    seen = await testing.stream_measured(cem_app, f"/v1/responses/export?survey_id={survey['id']}", bearer(keys["read"]))
    assert seen.status == 200 and seen.line_ends == BULK + 1 and seen.parts >= BULK // 2_000
    assert seen.size > 30 * 2**20 and seen.growth_bytes < 30 * 2**20, seen
