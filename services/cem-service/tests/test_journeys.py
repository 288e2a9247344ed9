"""Journeys: ordered stages with ordered touchpoints, referenced by key or id."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from cem.journeys.schemas import JourneyTouchpoint
from cem.touchpoints.service import SHOWN_IN_JOURNEYS, delete_touchpoint
from cxkit.testing import statements_sent, wait_for


async def _touchpoints(make: Any, *keys: str) -> dict[str, str]:
    return {key: (await make.touchpoint(key))["id"] for key in keys}


def _shape(journey: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(s["name"], [t["key"] for t in s["touchpoints"]]) for s in journey["stages"]]


async def test_create_keeps_stage_and_touchpoint_order_with_keys_or_ids(client: httpx.AsyncClient, make: Any) -> None:
    ids = await _touchpoints(make, "product-page", "checkout", "delivery", "support-call")
    body = {
        "name": "Online order",
        "stages": [
            {"name": "Purchase", "touchpoints": ["product-page", ids["checkout"]]},
            {"name": "Delivery", "description": "Parcel on its way", "touchpoints": ["delivery"]},
            {"name": "Support", "touchpoints": []},
        ],
    }
    r = await client.post("/v1/journeys", json=body)
    assert r.status_code == 201, r.text
    journey = r.json()
    assert r.headers["etag"] == '"1"' and r.headers["location"] == f"/v1/journeys/{journey['id']}"
    assert _shape(journey) == [("Purchase", ["product-page", "checkout"]), ("Delivery", ["delivery"]), ("Support", [])]
    assert journey["stages"][1]["description"] == "Parcel on its way"
    assert (await client.get(f"/v1/journeys/{journey['id']}")).json() == journey


async def test_a_key_that_reads_as_a_uuid_is_found_by_key_and_an_id_match_wins(
    client: httpx.AsyncClient, make: Any, cem_app: FastAPI
) -> None:
    # Keys the key pattern allows that also parse as UUIDs (32 hex digits, or the hyphenated form).
    hex_key, dashed_key = "0123456789abcdef0123456789abcdef", "5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c"
    ids = await _touchpoints(make, hex_key, dashed_key, "checkout")
    body = {
        "name": "J",
        "stages": [{"name": "S", "touchpoints": [hex_key, "checkout"]}, {"name": "T", "touchpoints": [dashed_key]}],
    }
    r = await client.post("/v1/journeys", json=body)
    assert r.status_code == 201, r.text
    assert _shape(r.json()) == [("S", [hex_key, "checkout"]), ("T", [dashed_key])]
    changed = await client.patch(
        f"/v1/journeys/{r.json()['id']}", json={"stages": [{"name": "T", "touchpoints": [dashed_key, ids[hex_key]]}]}
    )
    assert changed.status_code == 200, changed.text
    assert _shape(changed.json()) == [("T", [dashed_key, hex_key])]

    # A key spelling another touchpoint's id: the reference is that id (ids are made by the
    # service; a key cannot take over what an id names).
    copied = await make.touchpoint(ids["checkout"])
    r = await client.post("/v1/journeys", json={"name": "K", "stages": [{"name": "S", "touchpoints": [ids["checkout"]]}]})
    assert r.status_code == 201, r.text
    assert [t["id"] for t in r.json()["stages"][0]["touchpoints"]] == [ids["checkout"]] != [copied["id"]]

    # Unknown either way: a 422 that says both were tried; ids and keys are read in one query.
    with statements_sent(cem_app) as sent:
        missing = await client.post(
            "/v1/journeys", json={"name": "L", "stages": [{"name": "S", "touchpoints": ["checkout", str(uuid.UUID(int=1))]}]}
        )
    assert missing.status_code == 422, missing.text
    assert "no touchpoint with key or id '00000000-0000-0000-0000-000000000001'" in missing.text
    assert len([s for s, _ in sent if "FROM touchpoints" in s]) == 1, sent


async def test_reordering_stages_and_touchpoints_keeps_the_new_order(client: httpx.AsyncClient, make: Any) -> None:
    await _touchpoints(make, "a", "b", "c")
    journey = (
        await client.post(
            "/v1/journeys",
            json={"name": "J", "stages": [{"name": "One", "touchpoints": ["a", "b"]}, {"name": "Two", "touchpoints": ["c"]}]},
        )
    ).json()
    url = f"/v1/journeys/{journey['id']}"
    new_order = {"stages": [{"name": "Two", "touchpoints": ["c", "b"]}, {"name": "One", "touchpoints": ["a"]}]}
    r = await client.patch(url, json=new_order, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert _shape(r.json()) == [("Two", ["c", "b"]), ("One", ["a"])]
    assert _shape((await client.get(url)).json()) == [("Two", ["c", "b"]), ("One", ["a"])]
    same = await client.patch(url, json=new_order)
    assert same.json()["version"] == 2
    assert (await client.patch(url, json={"name": "K"}, headers={"If-Match": '"1"'})).status_code == 412


async def test_bad_stage_references_are_422(client: httpx.AsyncClient, make: Any) -> None:
    await _touchpoints(make, "a")
    bad = [
        [{"name": "S", "touchpoints": ["nope"]}],
        [{"name": "S", "touchpoints": ["5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c"]}],
        [{"name": "S", "touchpoints": ["a"]}, {"name": "T", "touchpoints": ["a"]}],
        [{"name": "S"}, {"name": "s"}],
        [{"name": ""}],
        [{"name": "S", "touchpoints": [""]}],
        [{"name": "S", "touchpoints": [7]}],
        "not a list",
    ]
    for stages in bad:
        r = await client.post("/v1/journeys", json={"name": "J", "stages": stages})
        assert r.status_code == 422, (stages, r.text)
        assert r.json()["errors"]


async def test_touchpoint_in_a_journey_cannot_be_deleted_and_journey_delete_frees_it(
    client: httpx.AsyncClient, make: Any
) -> None:
    ids = await _touchpoints(make, "a")
    journey = (await client.post("/v1/journeys", json={"name": "J", "stages": [{"name": "S", "touchpoints": ["a"]}]})).json()
    r = await client.delete(f"/v1/touchpoints/{ids['a']}")
    assert r.status_code == 409 and "journey 'J'" in r.json()["detail"]
    assert (await client.delete(f"/v1/journeys/{journey['id']}")).status_code == 204
    assert (await client.get(f"/v1/journeys/{journey['id']}")).status_code == 404
    assert (await client.delete(f"/v1/touchpoints/{ids['a']}")).status_code == 204


async def _waiting_on_locks(session_factory: Any) -> int:
    """How many sessions of this database wait on a lock."""
    async with session_factory() as session:
        waiting: int = await session.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        )
    return waiting


async def test_a_journey_naming_a_touchpoint_deleted_meanwhile_is_the_documented_409(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_app: FastAPI
) -> None:
    ids = await _touchpoints(make, "kiosk")
    async with session_factory() as deleting:
        # The delete has passed its check (no journey uses the touchpoint) and holds the row.
        await delete_touchpoint(deleting, uuid.UUID(ids["kiosk"]), None)
        body = {"name": "J", "stages": [{"name": "S", "touchpoints": ["kiosk"]}]}
        create = asyncio.create_task(client.post("/v1/journeys", json=body))
        await wait_for(lambda: _waiting_on_locks(session_factory))  # its step's foreign key waits on the row
        await deleting.commit()
        r = await create
    assert r.status_code == 409 and "deleted meanwhile" in r.json()["detail"], r.text
    assert (await client.get("/v1/journeys")).json()["items"] == []
    documented = cem_app.openapi()["paths"]["/v1/journeys"]["post"]["responses"]
    assert str(r.status_code) in documented, sorted(documented)


async def test_list_journeys_by_name_with_pagination(client: httpx.AsyncClient) -> None:
    for name in ["Onboarding", "Churn", "Online order"]:
        assert (await client.post("/v1/journeys", json={"name": name})).status_code == 201
    first = (await client.get("/v1/journeys", params={"limit": 2})).json()
    assert [j["name"] for j in first["items"]] == ["Churn", "Onboarding"]
    second = (await client.get("/v1/journeys", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [j["name"] for j in second["items"]] == ["Online order"] and second["next_cursor"] is None
    assert (await client.get("/v1/journeys", params={"cursor": "garbage!"})).status_code == 422


async def test_a_journey_read_naming_its_current_etag_is_304_until_it_or_a_touchpoint_it_shows_changes(
    client: httpx.AsyncClient, make: Any
) -> None:
    ids = await _touchpoints(make, "web-shop", "parcel", "unused")
    body = {"name": "Order", "stages": [{"name": "Buy", "touchpoints": ["web-shop"]}, {"name": "Get", "touchpoints": ["parcel"]}]}
    created = await client.post("/v1/journeys", json=body)
    url = f"/v1/journeys/{created.json()['id']}"

    async def read(held: str) -> httpx.Response:
        r = await client.get(url, headers={"If-None-Match": held})
        if r.status_code == 304:  # no body, the current ETag
            assert r.content == b"" and r.headers["etag"] == (await client.get(url)).headers["etag"]
        return r

    etag = created.headers["etag"]
    for held in (etag, f"W/{etag}", f'"9", {etag}', "*"):
        assert (await read(held)).status_code == 304, held
    # What a journey does not show of a touchpoint, or a touchpoint it does not hold: still current.
    assert (await client.patch(f"/v1/touchpoints/{ids['parcel']}", json={"description": "Tracked"})).status_code == 200
    assert (await client.patch(f"/v1/touchpoints/{ids['unused']}", json={"name": "Renamed"})).status_code == 200
    assert (await read(etag)).status_code == 304

    # What it shows of a touchpoint: its name, channel or target.
    for change in ({"name": "Parcel delivery"}, {"channel": "courier"}, {"target_metric": "csat", "target_score": 4.5}):
        assert (await client.patch(f"/v1/touchpoints/{ids['parcel']}", json=change)).status_code == 200
        fresh = await read(etag)
        assert fresh.status_code == 200 and fresh.headers["etag"] != etag, change
        [shown] = fresh.json()["stages"][1]["touchpoints"]
        assert all(shown[k] == v for k, v in change.items()), (change, shown)
        stale = await client.patch(url, json={"name": "Order again"}, headers={"If-Match": etag})
        assert stale.status_code == 412, stale.text
        etag = fresh.headers["etag"]
        assert (await read(etag)).status_code == 304

    # Its own change.
    assert (await client.patch(url, json={"description": "From cart to door"})).status_code == 200
    assert (await read(etag)).status_code == 200
    unknown = await client.get(f"/v1/journeys/{uuid.UUID(int=0)}", headers={"If-None-Match": "*"})
    assert unknown.status_code == 404


def test_what_a_journey_shows_of_a_touchpoint_is_what_gives_it_a_new_version() -> None:
    # Besides the id and the key, which never change.
    assert set(JourneyTouchpoint.model_fields) - {"id", "key"} == SHOWN_IN_JOURNEYS
