"""The customer list's time windows (`created_from`/`created_to`, `updated_from`/`updated_to`):
what was created in a period, and what changed since a moment, in the order of the change,
page by page; the export takes the same windows; an empty or unreadable window is a 422. Tasks,
deals and leads take the same `updated_from`/`updated_to` window and `sort=updated_at`."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx

from cxkit import testing


async def listed(client: httpx.AsyncClient, tag: str, **params: Any) -> list[str]:
    """The names of the customers the list shows, following every page."""
    return [c["name"] for c in await testing.every_item(client, "/v1/customers", limit=1, tag=tag, **params)]


async def test_created_in_a_period_and_changed_since_a_moment(client: httpx.AsyncClient, make: Any) -> None:
    tag = f"w-{uuid.uuid4().hex[:8]}"
    ada, bob, cy = [await make.customer(name=name, tags=[tag]) for name in ("Ada", "Bob", "Cy")]
    patched = await client.patch(f"/v1/customers/{ada['id']}", json={"owner": "sam@example.com"})
    assert patched.status_code == 200, patched.text
    ada_changed = patched.json()["updated_at"]

    assert await listed(client, tag, created_from=bob["created_at"], sort="created_at") == ["Bob", "Cy"]  # inclusive
    assert await listed(client, tag, created_to=cy["created_at"], sort="created_at") == ["Ada", "Bob"]  # exclusive
    assert await listed(client, tag, created_from=bob["created_at"], created_to=cy["created_at"]) == ["Bob"]
    # What changed since Cy was made, oldest change first: Cy (made), then Ada (changed after).
    assert await listed(client, tag, updated_from=cy["updated_at"], sort="updated_at") == ["Cy", "Ada"]
    assert await listed(client, tag, updated_from=ada_changed, sort="updated_at") == ["Ada"]
    assert await listed(client, tag, updated_to=cy["updated_at"], sort="updated_at") == ["Bob"]

    export = await client.get("/v1/customers/export", params={"tag": tag, "updated_from": cy["updated_at"], "sort": "updated_at"})
    assert export.status_code == 200, export.text
    assert [row["name"] for row in csv.DictReader(io.StringIO(export.text))] == ["Cy", "Ada"]


async def test_an_empty_or_unreadable_window_is_422(client: httpx.AsyncClient) -> None:
    at = "2026-12-05T10:00:00Z"
    for params, loc in [
        ({"created_from": at, "created_to": at}, ["query", "created_to"]),
        ({"updated_from": "2026-12-05T11:00:00Z", "updated_to": at}, ["query", "updated_to"]),
        ({"updated_from": "2026-12-05T10:00:00"}, ["query", "updated_from"]),  # no offset: which zone?
        ({"created_to": "yesterday"}, ["query", "created_to"]),
    ]:
        for path in ("/v1/customers", "/v1/customers/export"):
            r = await client.get(path, params=params)
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", (path, params, r.text)
            assert r.json()["errors"][0]["loc"] == loc, r.text


async def test_a_sync_with_include_removed_learns_of_merges_and_erasures(client: httpx.AsyncClient, make: Any) -> None:
    tag = f"r-{uuid.uuid4().hex[:8]}"
    kept, duplicate, gone = [await make.customer(name=name, tags=[tag]) for name in ("Kept", "Twin", "Gone")]
    synced_at = gone["updated_at"]
    merged = await client.post(f"/v1/customers/{kept['id']}/merge", json={"duplicate_id": duplicate["id"]})
    assert merged.status_code == 200, merged.text
    assert (await client.delete(f"/v1/customers/{gone['id']}")).status_code == 204

    # The plain list no longer shows the duplicate or the erased customer...
    assert await listed(client, tag, updated_from=synced_at, sort="updated_at") == ["Kept"]
    # ...with include_removed a sync since then sees both changes, as they stand now.
    changes: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params = {"tag": tag, "updated_from": synced_at, "sort": "updated_at", "include_removed": "true", "limit": 1}
        r = await client.get("/v1/customers", params=params | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        changes |= {c["id"]: c for c in r.json()["items"]}
        if (cursor := r.json()["next_cursor"]) is None:
            break
    assert changes.keys() == {kept["id"], duplicate["id"], gone["id"]}
    assert changes[duplicate["id"]]["merged_into_id"] == kept["id"]
    assert changes[duplicate["id"]]["updated_at"] >= synced_at
    erased = changes[gone["id"]]
    assert erased["erased_at"] is not None and erased["name"] is None and erased["email"] is None
    assert erased["updated_at"] >= synced_at

    export = await client.get("/v1/customers/export", params={"tag": tag, "sort": "created_at", "include_removed": "true"})
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [(r["id"], bool(r["merged_into_id"]), bool(r["erased_at"])) for r in rows] == [
        (kept["id"], False, False),
        (duplicate["id"], True, False),
        (gone["id"], False, True),
    ]
    assert (await client.get("/v1/customers", params={"include_removed": "maybe"})).status_code == 422


async def test_a_merge_re_pointing_earlier_duplicates_is_a_change_a_sync_sees(client: httpx.AsyncClient, make: Any) -> None:
    """A merged into B, then B into C: A now points at C, a change of A (new version, new
    updated_at, an entry in its history) that a sync with include_removed learns of."""
    tag = f"p-{uuid.uuid4().hex[:8]}"
    a, b, c = [await make.customer(name=name, tags=[tag]) for name in ("A", "B", "C")]
    assert (await client.post(f"/v1/customers/{b['id']}/merge", json={"duplicate_id": a["id"]})).status_code == 200

    async def a_as_listed() -> dict[str, Any]:
        [found] = [
            x for x in await testing.every_item(client, "/v1/customers", tag=tag, include_removed="true") if x["id"] == a["id"]
        ]
        return found

    a_merged = await a_as_listed()
    moment = (await make.customer(name="Marker"))["updated_at"]
    assert (await client.post(f"/v1/customers/{c['id']}/merge", json={"duplicate_id": b["id"]})).status_code == 200

    since = await listed(client, tag, updated_from=moment, sort="updated_at", include_removed="true")
    assert sorted(since) == ["A", "B", "C"]
    a_now = await a_as_listed()
    assert a_now["merged_into_id"] == c["id"] and a_now["version"] == a_merged["version"] + 1
    assert a_now["updated_at"] > a_merged["updated_at"]
    history = (await client.get(f"/v1/customers/{a['id']}/history")).json()["items"]
    assert history[0]["version"] == a_now["version"] and history[0]["via"] == "merge"
    assert history[0]["changed_at"] == a_now["updated_at"]
    assert history[0]["changes"] == [{"field": "merged_into_id", "from": b["id"], "to": c["id"]}]


async def changed_since(client: httpx.AsyncClient, kind: str, since: str, **params: Any) -> list[str]:
    """The ids `GET /v1/<kind>` lists as changed since `since`, oldest change first, page by page."""
    ids: list[str] = []
    cursor = None
    while True:
        query = {"updated_from": since, "sort": "updated_at", "limit": 1, **params} | ({"cursor": cursor} if cursor else {})
        r = await client.get(f"/v1/{kind}", params=query)
        assert r.status_code == 200, r.text
        ids += [item["id"] for item in r.json()["items"]]
        if (cursor := r.json()["next_cursor"]) is None:
            return ids


async def test_tasks_deals_and_leads_changed_since_a_moment_in_the_order_of_the_change(
    client: httpx.AsyncClient, make: Any
) -> None:
    survivor, duplicate = await make.customer(), await make.customer()
    rows = {
        "tasks": [await make.task(duplicate["id"]), await make.task(duplicate["id"])],
        "deals": [await make.deal(duplicate["id"]), await make.deal(duplicate["id"])],
        "leads": [await make.lead(), await make.lead()],
    }
    since = {kind: first["updated_at"] for kind, (first, _) in rows.items()}
    for kind, (first, second) in rows.items():
        assert await changed_since(client, kind, since[kind]) == [first["id"], second["id"]], kind
        # The first changes: it comes last now, and alone after the second's last change.
        changed = await client.patch(f"/v1/{kind}/{first['id']}", json={"title": "Changed"} if kind != "leads" else {"score": 9})
        assert changed.status_code == 200, changed.text
        assert await changed_since(client, kind, since[kind]) == [second["id"], first["id"]], kind
        assert await changed_since(client, kind, second["updated_at"], updated_to=changed.json()["updated_at"]) == [second["id"]]

    # A merge moving the duplicate's tasks and deals to the survivor is a change a sync sees.
    moment = (await make.customer())["updated_at"]
    assert (await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})).status_code == 200
    for kind in ("tasks", "deals"):
        moved = await changed_since(client, kind, moment)
        assert sorted(moved) == sorted(r["id"] for r in rows[kind]), kind
    assert await changed_since(client, "leads", moment) == []

    for kind in rows:
        r = await client.get(f"/v1/{kind}", params={"updated_from": moment, "updated_to": moment})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "updated_to"], r.text
        assert (await client.get(f"/v1/{kind}", params={"updated_from": "2026-12-05T10:00:00"})).status_code == 422
