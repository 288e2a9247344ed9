"""Touchpoints over HTTP against real PostgreSQL."""

from __future__ import annotations

from typing import Any

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


async def test_get_patch_with_if_match_and_version_bump(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "Checkout"})).json()
    url = f"/v1/touchpoints/{created['id']}"
    got = await client.get(url)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    r = await client.patch(
        url, json={"name": "Web checkout", "target_metric": "nps", "target_score": 45}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    stale = await client.patch(url, json={"name": "Other"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["etag"] == '"2"'
    same = await client.patch(url, json={"name": "Web checkout"})
    assert same.json()["version"] == 2, "a PATCH that changes nothing keeps the version"
    cleared = await client.patch(url, json={"target_metric": None, "target_score": None, "channel": None})
    assert cleared.json()["target_score"] is None and cleared.json()["version"] == 3


async def test_patch_validates_against_the_stored_values(client: httpx.AsyncClient) -> None:
    tid = (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "Checkout"})).json()["id"]
    url = f"/v1/touchpoints/{tid}"
    for body in [
        {"target_score": 40},  # no metric stored or sent
        {"target_metric": "ces", "target_score": 9},
        {"key": "renamed"},
        {"name": None},
        {"name": ""},
        {"name": "a\u0000b"},
        {"target_score": "high"},
    ]:
        r = await client.patch(url, json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.get("/v1/touchpoints/not-a-uuid")).status_code == 422
    assert (await client.get("/v1/touchpoints/5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c")).status_code == 404


async def test_delete_refuses_a_touchpoint_in_use_and_deletes_a_free_one(client: httpx.AsyncClient) -> None:
    used = (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "Checkout"})).json()
    free = (await client.post("/v1/touchpoints", json={"key": "kiosk", "name": "Kiosk"})).json()
    await client.post("/v1/surveys", json={"name": "Checkout NPS", "kind": "nps", "touchpoint": "checkout"})
    r = await client.delete(f"/v1/touchpoints/{used['id']}")
    assert r.status_code == 409 and "Checkout NPS" in r.json()["detail"]
    assert (await client.delete(f"/v1/touchpoints/{free['id']}", headers={"If-Match": '"7"'})).status_code == 412
    assert (await client.delete(f"/v1/touchpoints/{free['id']}", headers={"If-Match": '"1"'})).status_code == 204
    assert (await client.get(f"/v1/touchpoints/{free['id']}")).status_code == 404


async def test_a_touchpoint_or_survey_read_naming_its_current_etag_is_304_and_a_change_makes_it_200(
    client: httpx.AsyncClient, make: Any
) -> None:
    rows = {
        "touchpoints": (await make.touchpoint("etag-desk"), {"name": "Front desk"}),
        "surveys": (await make.survey("csat", status="draft"), {"name": "Desk CSAT"}),
    }
    for kind, (row, change) in rows.items():
        url = f"/v1/{kind}/{row['id']}"
        current = (await client.get(url)).headers["etag"]
        for held in (current, f"W/{current}", f'"0", {current}', "*"):
            r = await client.get(url, headers={"If-None-Match": held})
            assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", current), (kind, held)
        assert (await client.patch(url, json=change)).status_code == 200
        fresh = await client.get(url, headers={"If-None-Match": current})
        assert fresh.status_code == 200 and fresh.headers["etag"] != current, kind
        assert fresh.json()["name"] == change["name"]
