"""Touchpoints over HTTP against real PostgreSQL."""

from __future__ import annotations

import httpx

from cxkit.testing import bearer


async def test_create_and_list_touchpoints_in_key_order_with_pagination(client: httpx.AsyncClient) -> None:
    for key in ["support-call", "checkout", "delivery"]:
        r = await client.post("/v1/touchpoints", json={"key": key, "name": key.title(), "channel": "web"})
        assert r.status_code == 201, r.text
        assert r.headers["etag"] == '"1"'
    first = (await client.get("/v1/touchpoints", params={"limit": 2})).json()
    assert [t["key"] for t in first["items"]] == ["checkout", "delivery"]
    second = (await client.get("/v1/touchpoints", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [t["key"] for t in second["items"]] == ["support-call"] and second["next_cursor"] is None


async def test_touchpoint_key_is_unique(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "A"})).status_code == 201
    dup = await client.post("/v1/touchpoints", json={"key": "checkout", "name": "B"})
    assert dup.status_code == 409 and dup.headers["content-type"] == "application/problem+json"


async def test_touchpoint_validation(client: httpx.AsyncClient) -> None:
    bad = [
        {"key": "Has Spaces", "name": "x"},
        {"key": "ok", "name": ""},
        {"key": "ok", "name": "x", "target_metric": "nps", "target_score": 150},
        {"key": "ok", "name": "x", "target_score": 40},
        {"key": "ok", "name": "x", "id": "1"},
    ]
    for body in bad:
        r = await client.post("/v1/touchpoints", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"]
    ok = await client.post("/v1/touchpoints", json={"key": "ok", "name": "x", "target_metric": "nps", "target_score": 40})
    assert ok.status_code == 201 and ok.json()["target_score"] == 40


async def test_touchpoints_need_keys_and_scopes(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    assert (await client.get("/v1/touchpoints", headers={"Authorization": ""})).status_code == 401
    r = await client.post("/v1/touchpoints", json={"key": "a", "name": "A"}, headers=bearer(keys["read"]))
    assert r.status_code == 403
