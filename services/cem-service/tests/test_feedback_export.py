"""GET /v1/feedback/export: the list's feedback as a streamed, spreadsheet-safe CSV."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from cem.db import ApiKey
from cem.feedback.repository import EXPORT_HEADER
from cxkit import testing
from cxkit.testing import bearer

HEADER = list(EXPORT_HEADER)


def rows_of(response: httpx.Response) -> list[dict[str, str]]:
    return testing.csv_records(response, HEADER)


async def give(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/feedback", json={"channel": "chat", "text": "Fine.", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def test_export_has_the_same_feedback_in_the_same_order_as_the_paged_list(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    await make.touchpoint("support")
    customer = str(await make.customer())
    for day in range(1, 6):
        at = f"2026-11-0{day}T10:00:00Z"
        await give(client, customer_id=customer, text="Great service, thank you!", received_at=at)
        await give(client, touchpoint="support", channel="email", text="Terrible, slow and rude.", received_at=at)
        await give(client, touchpoint="checkout", channel="app_store", text="It works.", received_at=f"2026-11-0{day}T12:00:00Z")

    for params in (
        {"customer_id": customer},
        {"touchpoint": "support", "from": "2026-11-02T00:00:00Z", "to": "2026-11-04T00:00:00Z"},
        {"channel": "app_store"},
        {"sentiment": "negative"},
        {},
    ):
        exported = [r["feedback_id"] for r in rows_of(await client.get("/v1/feedback/export", params=params))]
        assert exported == await testing.paged_ids(client, "/v1/feedback", params), params
        assert exported, params
    window = rows_of(
        await client.get("/v1/feedback/export", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T00:00:00Z"})
    )
    assert len(window) == 3


async def test_export_lines_carry_the_fields_of_a_read(client: httpx.AsyncClient, make: Any, cem_app: FastAPI) -> None:
    await make.touchpoint("delivery")
    customer = str(await make.customer())
    text = 'The courier was late, "very" late\nbut support sorted it out.'
    rated = await give(
        client,
        customer_id=customer,
        touchpoint="delivery",
        text=text,
        rating=2,
        rating_scale_min=1,
        rating_scale_max=5,
        external_ref="ticket-8812",
        received_at="2026-11-23T14:05:00Z",
    )
    anonymous = await give(client, email="walk-in@example.net", channel="store", text="Nice shop.")
    response = await client.get("/v1/feedback/export")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="feedback-\d{8}T\d{6}Z\.csv"', response.headers["content-disposition"])
    rows = {r["feedback_id"]: r for r in rows_of(response)}
    row = rows[rated["id"]]
    assert {k: row[k] for k in ("customer_id", "email", "touchpoint", "channel", "text", "external_ref")} == {
        "customer_id": customer,
        "email": "",
        "touchpoint": "delivery",
        "channel": "chat",
        "text": text,
        "external_ref": "ticket-8812",
    }
    assert (row["rating"], row["rating_scale_min"], row["rating_scale_max"]) == ("2.0", "1", "5")
    assert row["sentiment_label"] == rated["sentiment"]["label"]
    assert float(row["sentiment_score"]) == rated["sentiment"]["score"]
    assert row["received_at"].startswith("2026-11-23T14:05:00")
    bare = rows[anonymous["id"]]
    assert (bare["customer_id"], bare["email"], bare["rating"], bare["touchpoint"]) == ("", "walk-in@example.net", "", "")

    # Erased text (what an erasure leaves): an empty cell, the sentiment kept.
    async with cem_app.state.pg_pool.acquire() as conn:
        await conn.execute("UPDATE feedback SET text = NULL, email = NULL WHERE id = $1", uuid.UUID(rated["id"]))
    row = {r["feedback_id"]: r for r in rows_of(await client.get("/v1/feedback/export"))}[rated["id"]]
    assert (row["text"], row["sentiment_label"]) == ("", rated["sentiment"]["label"])


async def test_export_neutralises_text_cells_and_keeps_numbers(client: httpx.AsyncClient, cem_app: FastAPI) -> None:
    given = await give(client, text='=HYPERLINK("http://evil")', channel="web", external_ref="+1")
    async with cem_app.state.pg_pool.acquire() as conn:  # what an older import may have stored
        await conn.execute(
            "UPDATE feedback SET email = '-x@example.com', touchpoint = '@SUM(A1)', sentiment_score = -0.61 WHERE id = $1",
            uuid.UUID(given["id"]),
        )
    (row,) = rows_of(await client.get("/v1/feedback/export"))
    assert row["text"] == '\'=HYPERLINK("http://evil")' and row["external_ref"] == "'+1"
    assert row["email"] == "'-x@example.com" and row["touchpoint"] == "'@SUM(A1)"
    assert row["sentiment_score"] == "-0.61"  # a number from the database: left a number


async def test_export_refuses_bad_filters_and_other_methods(client: httpx.AsyncClient) -> None:
    for params in (
        {"customer_id": "nope"},
        {"from": "yesterday"},
        {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"touchpoint": "x" * 101},
        {"sentiment": "angry"},
    ):
        response = await client.get("/v1/feedback/export", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
    refused = await client.post("/v1/feedback/export", json={})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"


async def test_export_needs_a_key_with_the_read_scope(client: httpx.AsyncClient, keys: dict[str, str], cem_app: FastAPI) -> None:
    assert (await client.get("/v1/feedback/export", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/feedback/export", headers=bearer(keys["revoked"]))).status_code == 401
    assert (await client.get("/v1/feedback/export", headers=bearer(keys["read"]))).status_code == 200
    plaintext = await testing.key_without_read_scope(cem_app.state.session_factory, ApiKey)
    forbidden = await client.get("/v1/feedback/export", headers=bearer(plaintext))
    assert forbidden.status_code == 403 and forbidden.headers["content-type"] == "application/problem+json"


async def test_export_is_documented_as_text_csv_with_an_example(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/feedback/export"]["get"]
    assert operation["summary"] and operation["tags"] == ["feedback"]
    assert operation["responses"]["200"]["content"]["text/csv"]["example"].startswith(",".join(HEADER) + "\r\n")
    assert {"401", "403", "422", "503"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} >= {"customer_id", "touchpoint", "channel", "sentiment", "from", "to"}


BULK = 100_000


async def test_export_streams_100k_pieces_of_feedback_in_constant_memory(cem_app: FastAPI, keys: dict[str, str]) -> None:
    async with cem_app.state.pg_pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO feedback (id, channel, text, sentiment_label, sentiment_score, received_at, recorded_at)
            SELECT gen_random_uuid(), 'chat', 'feedback number ' || g || ', with a few more words to carry',
                   'neutral', 0, now() - g * interval '1 second', now()
            FROM generate_series(1, $1::int) AS g
            """,
            BULK,
        )
    seen = await testing.stream_measured(cem_app, "/v1/feedback/export?channel=chat", bearer(keys["read"]))
    assert seen.status == 200 and seen.line_ends == BULK + 1 and seen.parts >= BULK // 2_000
    assert seen.size > 12 * 2**20 and seen.growth_bytes < 12 * 2**20, seen
