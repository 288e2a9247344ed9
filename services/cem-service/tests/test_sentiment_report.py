"""GET /v1/analytics/sentiment: the feedback counted per sentiment, over time, per touchpoint and
per channel, with the net sentiment and mean score and their intervals."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI

from cem.db import ApiKey
from cxkit import testing
from cxkit.pg_pool import asyncpg_dsn
from cxkit.testing import bearer

POSITIVE = ("Great service, thank you!", "Lovely staff and a quick refund.", "Good.")
NEUTRAL = "The store opens at nine."
NEGATIVE = ("Terrible, slow and rude.", "The box was crushed. Awful.")
LABELS = ("positive", "neutral", "negative")


async def give(client: httpx.AsyncClient, text: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/feedback", json={"channel": "chat", "text": text, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def report(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/analytics/sentiment", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_hand_worked_week_of_feedback(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("delivery")
    # Three positive, one neutral and two negative pieces, in two ISO weeks (Monday 2026-11-02
    # and Monday 2026-11-09), at two touchpoints (one piece about none) and from two channels.
    given = [
        await give(client, POSITIVE[0], touchpoint="delivery", received_at="2026-11-03T09:00:00Z"),
        await give(client, POSITIVE[1], touchpoint="delivery", channel="email", received_at="2026-11-04T09:00:00Z"),
        await give(client, POSITIVE[2], received_at="2026-11-08T23:59:59Z"),
        await give(client, NEUTRAL, touchpoint="delivery", received_at="2026-11-09T00:00:00Z"),
        await give(client, NEGATIVE[0], touchpoint="delivery", channel="email", received_at="2026-11-10T12:00:00Z"),
        await give(client, NEGATIVE[1], touchpoint="delivery", received_at="2026-11-11T12:00:00Z"),
    ]
    assert [g["sentiment"]["label"] for g in given] == ["positive"] * 3 + ["neutral"] + ["negative"] * 2
    body = await report(client)
    assert body["n"] == 6 and body["counts"] == {"positive": 3, "neutral": 1, "negative": 2}
    # Worked by hand: (3 - 2) / 6 = 16.67 points; pp = 1/2, pd = 1/3, the standard error
    # sqrt((pp(1-pp) + pd(1-pd) + 2 pp pd) / n) = 0.3664, so 16.67 +- 1.96 * 36.64 = -55.15 .. 88.48.
    assert body["net_sentiment"] == pytest.approx(16.6667, abs=1e-4)
    assert body["ci95"] == {"low": pytest.approx(-55.15, abs=0.01), "high": pytest.approx(88.48, abs=0.01)}
    # The mean score, the other way: the standard library on the scores each piece got.
    scores = [g["sentiment"]["score"] for g in given]
    mean, sd = statistics.mean(scores), statistics.stdev(scores)
    half = 1.96 * sd / math.sqrt(len(scores))
    assert body["mean_score"] == pytest.approx(mean, abs=1e-4)
    low, high = max(-1, mean - half), min(1, mean + half)
    assert body["mean_ci95"] == {"low": pytest.approx(low, abs=1e-4), "high": pytest.approx(high, abs=1e-4)}

    assert [(p["start"], p["n"], p["counts"]) for p in body["series"]] == [
        ("2026-11-02T00:00:00Z", 3, {"positive": 3, "neutral": 0, "negative": 0}),
        ("2026-11-09T00:00:00Z", 3, {"positive": 0, "neutral": 1, "negative": 2}),
    ]
    first, second = body["series"]
    assert first["net_sentiment"] == 100.0 and first["ci95"] == {"low": 100.0, "high": 100.0}
    assert second["net_sentiment"] == pytest.approx(-66.6667, abs=1e-4)
    assert second["mean_score"] == pytest.approx(statistics.mean(scores[3:]), abs=1e-4)

    assert body["touchpoint_count"] == 2
    assert [(t["touchpoint"], t["n"], t["counts"]) for t in body["by_touchpoint"]] == [
        ("delivery", 5, {"positive": 2, "neutral": 1, "negative": 2}),
        (None, 1, {"positive": 1, "neutral": 0, "negative": 0}),
    ]
    alone = body["by_touchpoint"][1]
    assert alone["ci95"] is None and alone["mean_ci95"] is None and alone["mean_score"] == scores[2]
    assert body["channel_count"] == 2
    assert [(c["channel"], c["n"], c["counts"]) for c in body["by_channel"]] == [
        ("chat", 4, {"positive": 2, "neutral": 1, "negative": 1}),
        ("email", 2, {"positive": 1, "neutral": 0, "negative": 1}),
    ]
    assert body["filters"] == {"customer_id": None, "touchpoint": None, "channel": None, "from": None, "to": None}
    assert body["interval"] == "week" and body["definition"].startswith("Net sentiment")

    monthly = await report(client, interval="month")
    assert [(p["start"], p["n"]) for p in monthly["series"]] == [("2026-11-01T00:00:00Z", 6)]
    daily = await report(client, interval="day", **{"from": "2026-11-08T00:00:00Z", "to": "2026-11-10T00:00:00Z"})
    assert [(p["start"], p["n"]) for p in daily["series"]] == [("2026-11-08T00:00:00Z", 1), ("2026-11-09T00:00:00Z", 1)]


async def test_every_filter_counts_what_the_feedback_list_shows(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    await make.touchpoint("support")
    ada = str(await make.customer())
    texts = (*POSITIVE, NEUTRAL, *NEGATIVE)
    for day in range(1, 8):
        for i, text in enumerate(texts):
            if (day + 2 * i) % 4 == 0:  # some gaps
                continue
            await give(
                client,
                text,
                customer_id=ada if i % 2 else None,
                touchpoint=("checkout", "support", None)[(day + i) % 3],
                channel=("chat", "email", "app_store")[i % 3],
                received_at=f"2026-11-0{day}T1{i}:00:00Z",
            )
    for params in (
        {},
        {"customer_id": ada},
        {"touchpoint": "support"},
        {"channel": "email"},
        {"from": "2026-11-03T00:00:00Z", "to": "2026-11-06T00:00:00Z"},
        {"customer_id": ada, "touchpoint": "checkout", "channel": "chat", "from": "2026-11-02T00:00:00Z"},
    ):
        listed = {label: len(await testing.paged_ids(client, "/v1/feedback", {**params, "sentiment": label}, limit=50))
                  for label in LABELS}  # fmt: skip
        body = await report(client, **params, interval="day")
        assert body["counts"] == listed and body["n"] == sum(listed.values()) > 0, params
        assert sum(p["n"] for p in body["series"]) == body["n"], params
        assert sum(t["n"] for t in body["by_touchpoint"]) == body["n"], params
        assert sum(c["n"] for c in body["by_channel"]) == body["n"], params
        assert body["filters"]["customer_id"] == params.get("customer_id")
        assert body["filters"]["channel"] == params.get("channel")
        if "touchpoint" in params:
            assert [t["touchpoint"] for t in body["by_touchpoint"]] == [params["touchpoint"]]
        per_channel = Counter()
        for item in (await client.get("/v1/feedback", params={**params, "limit": 200})).json()["items"]:
            per_channel[item["channel"]] += 1
        assert {c["channel"]: c["n"] for c in body["by_channel"]} == dict(per_channel), params


async def test_limit_lists_the_largest_groups_and_counts_them_all(client: httpx.AsyncClient, make: Any) -> None:
    for key in ("alpha", "beta", "gamma"):
        await make.touchpoint(key)
    for key, n in (("alpha", 1), ("beta", 3), ("gamma", 2)):
        for _ in range(n):
            await give(client, POSITIVE[0], touchpoint=key, channel=f"from-{key}")
    await give(client, NEGATIVE[0], channel="from-beta")  # about no touchpoint: after the equal ones
    body = await report(client, limit=2)
    assert [t["touchpoint"] for t in body["by_touchpoint"]] == ["beta", "gamma"]
    assert [c["channel"] for c in body["by_channel"]] == ["from-beta", "from-gamma"]
    assert (body["touchpoint_count"], body["channel_count"]) == (4, 3)
    everything = await report(client, limit=200)
    assert [t["touchpoint"] for t in everything["by_touchpoint"]] == ["beta", "gamma", "alpha", None]


async def test_no_feedback_gives_empty_figures_not_zeros(client: httpx.AsyncClient) -> None:
    body = await report(client, touchpoint="nowhere")
    assert body["n"] == 0 and body["counts"] == {"positive": 0, "neutral": 0, "negative": 0}
    assert body["net_sentiment"] is None and body["ci95"] is None
    assert body["mean_score"] is None and body["mean_ci95"] is None
    assert body["series"] == [] and body["by_touchpoint"] == [] and body["by_channel"] == []
    assert (body["touchpoint_count"], body["channel_count"]) == (0, 0)
    assert body["filters"]["touchpoint"] == "nowhere"


async def test_bad_filters_are_422_problems(client: httpx.AsyncClient) -> None:
    for params in (
        {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"from": "yesterday"},
        {"interval": "year"},
        {"limit": 0},
        {"limit": 201},
        {"customer_id": "nobody"},
        {"channel": "x" * 51},
    ):
        response = await client.get("/v1/analytics/sentiment", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
    inverted = await client.get("/v1/analytics/sentiment", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    assert [e["loc"] for e in inverted.json()["errors"]] == [["query", "to"]]


async def test_it_needs_a_key_with_the_read_scope(client: httpx.AsyncClient, keys: dict[str, str], cem_app: FastAPI) -> None:
    assert (await client.get("/v1/analytics/sentiment", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/analytics/sentiment", headers=bearer(keys["read"]))).status_code == 200
    plaintext = await testing.key_without_read_scope(cem_app.state.session_factory, ApiKey)
    forbidden = await client.get("/v1/analytics/sentiment", headers=bearer(plaintext))
    assert forbidden.status_code == 403 and forbidden.headers["content-type"] == "application/problem+json"


async def test_it_is_documented_with_an_example(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/analytics/sentiment"]["get"]
    assert operation["summary"] and operation["tags"] == ["analytics"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"customer_id", "touchpoint", "channel", "from", "to", "interval", "limit"}
    assert {"401", "403", "422"} <= set(operation["responses"])
    example = document["components"]["schemas"]["SentimentReport"]["examples"][0]
    assert set(example) == set(document["components"]["schemas"]["SentimentReport"]["properties"])


async def test_the_planner_knows_how_many_buckets_there_are(
    client: httpx.AsyncClient, cem_app: FastAPI, cem_database_url: str
) -> None:
    """Guessing one bucket per distinct time (about one per piece of feedback), PostgreSQL would
    sort every row on its bucket, spilling to disk at a million; the extended statistics on the
    bucket expressions (migration cem0023) let it count the buckets in a hash table."""
    conn = await asyncpg.connect(asyncpg_dsn(cem_database_url))
    try:
        await conn.execute(
            "INSERT INTO feedback (id, channel, text, sentiment_label, sentiment_score, received_at, recorded_at) "
            "SELECT gen_random_uuid(), 'chat', 'x', 'neutral', 0, timestamptz '2025-12-01' + i * interval '1 hour', now() "
            "FROM generate_series(1, 8760) AS i"
        )
        await conn.execute("ANALYZE feedback")
        for interval, buckets in (("day", 365), ("week", 53), ("month", 12)):
            with testing.statements_sent(cem_app) as seen:
                body = (await client.get("/v1/analytics/sentiment", params={"interval": interval})).json()
            assert body["n"] == 8760 and len(body["series"]) in (buckets, buckets + 1)
            (statement, parameters) = next((sql, args) for sql, args in seen if "GROUPING SETS" in sql)
            plan = orjson.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + statement, *parameters))[0]["Plan"]
            kinds = [node["Node Type"] for node in testing.plan_nodes(plan)]
            assert "Sort" not in kinds, (interval, kinds)
            # About the buckets, and far from one per row (8,760) as it guesses without them.
            assert plan["Plan Rows"] < 1000, (interval, plan["Plan Rows"])
    finally:
        await conn.close()
