"""The customer list's time windows (`created_from`/`created_to`, `updated_from`/`updated_to`):
what was created in a period, and what changed since a moment, in the order of the change,
page by page; the export takes the same windows; an empty or unreadable window is a 422."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx


async def listed(client: httpx.AsyncClient, tag: str, **params: Any) -> list[str]:
    """The names of the customers the list shows, following every page."""
    names: list[str] = []
    cursor = None
    while True:
        r = await client.get("/v1/customers", params={"tag": tag, "limit": 1, **params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        names += [c["name"] for c in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return names


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
