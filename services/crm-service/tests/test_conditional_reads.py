"""Conditional reads (`If-None-Match` → 304) of tasks, leads, deals and pipelines, and the rule
they stand on: any change of what a read serves gives the row a new version (its `ETag`),
including the changes made in bulk by a merge, an erasure, a deleted deal, a new default
pipeline or a renamed stage."""

from __future__ import annotations

from typing import Any

import httpx


async def held_is_current(client: httpx.AsyncClient, url: str, held: str, current: str) -> bool:
    """Whether a read sending `If-None-Match: <held>` is told its copy is current: 304, no
    body, the `current` ETag."""
    r = await client.get(url, headers={"If-None-Match": held})
    assert r.status_code in (200, 304), r.text
    if r.status_code == 304:
        assert (r.content, r.headers["etag"]) == (b"", current)
    return r.status_code == 304


async def test_a_task_lead_deal_or_pipeline_read_naming_its_current_etag_is_304_and_a_change_makes_it_200(
    client: httpx.AsyncClient, make: Any
) -> None:
    customer = await make.customer()
    rows = {
        "tasks": (await make.task(customer["id"]), {"title": "Call back"}),
        "leads": (await make.lead(), {"score": 40}),
        "deals": (await make.deal(customer["id"]), {"title": "A bigger deal"}),
        "pipelines": (await make.pipeline(), {"name": "Renamed pipeline"}),
    }
    for kind, (row, change) in rows.items():
        url = f"/v1/{kind}/{row['id']}"
        for held in ('"1"', 'W/"1"', '"9", "1"', "*"):
            assert await held_is_current(client, url, held, '"1"'), (kind, held)
        assert (await client.get(url, headers={"If-None-Match": '"2"'})).json()["id"] == row["id"]
        assert (await client.patch(url, json=change)).status_code == 200
        fresh = await client.get(url, headers={"If-None-Match": '"1"'})
        assert (fresh.status_code, fresh.headers["etag"]) == (200, '"2"'), kind
        assert await held_is_current(client, url, '"2"', '"2"'), kind
    assert (await client.get(f"/v1/tasks/{customer['id']}", headers={"If-None-Match": "*"})).status_code == 404


async def etags(client: httpx.AsyncClient, urls: list[str]) -> dict[str, str]:
    return {url: (await client.get(url)).headers["etag"] for url in urls}


async def test_a_merge_and_an_erasure_give_the_tasks_deals_and_leads_they_change_a_new_version(
    client: httpx.AsyncClient, make: Any
) -> None:
    survivor, duplicate = await make.customer(), await make.customer()
    lead = await make.lead()
    converted = (await client.post(f"/v1/leads/{lead['id']}/convert", json={"customer_id": duplicate["id"]})).json()
    assert converted["lead"]["converted_customer_id"] == duplicate["id"]
    task = await make.task(duplicate["id"], description="Ask about the renewal")
    deal = await make.deal(duplicate["id"], title="Renewal for Jo")
    urls = [f"/v1/leads/{lead['id']}", f"/v1/tasks/{task['id']}", f"/v1/deals/{deal['id']}"]
    before = await etags(client, urls)

    assert (await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})).status_code == 200
    for url in urls:
        moved = await client.get(url, headers={"If-None-Match": before[url]})
        assert moved.status_code == 200, url  # the held copy names the duplicate: it is stale
        assert moved.json().get("customer_id", moved.json().get("converted_customer_id")) == survivor["id"], url
        assert moved.json()["updated_at"] > (await client.get(url)).json()["created_at"], url
    merged = await etags(client, urls)
    assert all(merged[u] != before[u] for u in urls), (before, merged)

    assert (await client.delete(f"/v1/customers/{survivor['id']}")).status_code == 204
    for url in urls:
        erased = await client.get(url, headers={"If-None-Match": merged[url]})
        assert erased.status_code == 200, url
    reads = {url: (await client.get(url)).json() for url in urls}
    assert reads[urls[0]]["email"] is None and reads[urls[1]]["description"] is None
    assert reads[urls[2]]["title"] != "Renewal for Jo"


async def test_deleting_a_deal_gives_the_tasks_and_leads_that_named_it_a_new_version(
    client: httpx.AsyncClient, make: Any
) -> None:
    lead = await make.lead()
    converted = (await client.post(f"/v1/leads/{lead['id']}/convert", json={"deal": {"title": "Pilot"}})).json()
    deal_id = converted["lead"]["converted_deal_id"]
    assert deal_id is not None
    task = (await client.post("/v1/tasks", json={"deal_id": deal_id, "title": "Send contract"})).json()
    urls = [f"/v1/leads/{lead['id']}", f"/v1/tasks/{task['id']}"]
    before = await etags(client, urls)

    assert (await client.delete(f"/v1/deals/{deal_id}")).status_code == 204
    lead_now = await client.get(urls[0], headers={"If-None-Match": before[urls[0]]})
    task_now = await client.get(urls[1], headers={"If-None-Match": before[urls[1]]})
    assert (lead_now.status_code, lead_now.json()["converted_deal_id"]) == (200, None)
    assert (task_now.status_code, task_now.json()["deal_id"]) == (200, None)
    # The new versions guard writes too: a change sent with the old ETag is refused.
    stale = await client.patch(urls[1], json={"title": "Send it"}, headers={"If-Match": before[urls[1]]})
    assert stale.status_code == 412, stale.text


async def test_a_new_default_pipeline_gives_the_previous_default_a_new_version(client: httpx.AsyncClient, make: Any) -> None:
    default = next(p for p in (await client.get("/v1/pipelines")).json()["items"] if p["is_default"])
    url = f"/v1/pipelines/{default['id']}"
    held = (await client.get(url)).headers["etag"]
    other = await make.pipeline()
    assert (await client.patch(f"/v1/pipelines/{other['id']}", json={"is_default": True})).json()["is_default"] is True
    now = await client.get(url, headers={"If-None-Match": held})
    assert (now.status_code, now.json()["is_default"]) == (200, False)
    assert now.headers["etag"] != held


async def test_a_stage_renamed_or_given_a_new_probability_gives_its_deals_a_new_version(
    client: httpx.AsyncClient, make: Any
) -> None:
    pipeline = await make.pipeline()
    lead_in, demo, won, lost = pipeline["stages"]
    customer = await make.customer()
    in_lead_in = await make.deal(customer["id"], pipeline_id=pipeline["id"], stage="Lead in")
    in_demo = await make.deal(customer["id"], pipeline_id=pipeline["id"], stage="Demo")
    urls = {"lead_in": f"/v1/deals/{in_lead_in['id']}", "demo": f"/v1/deals/{in_demo['id']}"}
    held = await etags(client, list(urls.values()))

    async def patch_stages(*stages: dict[str, Any]) -> None:
        r = await client.patch(f"/v1/pipelines/{pipeline['id']}", json={"stages": list(stages)})
        assert r.status_code == 200, r.text

    def stage(row: dict[str, Any], **change: Any) -> dict[str, Any]:
        return {k: row[k] for k in ("id", "name", "probability", "is_won", "is_lost")} | change

    # Reordering alone changes nothing a deal shows: both copies stay current.
    await patch_stages(stage(demo), stage(lead_in), stage(won), stage(lost))
    for url in urls.values():
        assert await held_is_current(client, url, held[url], held[url]), url

    # A renamed stage: its deals are new, the others' copies stay current.
    await patch_stages(stage(lead_in, name="Qualified"), stage(demo), stage(won), stage(lost))
    renamed = await client.get(urls["lead_in"], headers={"If-None-Match": held[urls["lead_in"]]})
    assert (renamed.status_code, renamed.json()["stage"]) == (200, "Qualified")
    assert renamed.headers["etag"] != held[urls["lead_in"]]
    assert await held_is_current(client, urls["demo"], held[urls["demo"]], held[urls["demo"]])
    stale = await client.patch(urls["lead_in"], json={"title": "Renamed"}, headers={"If-Match": held[urls["lead_in"]]})
    assert stale.status_code == 412, stale.text

    # A stage's new probability: the same.
    await patch_stages(stage(lead_in, name="Qualified"), stage(demo, probability="0.7"), stage(won), stage(lost))
    weighed = await client.get(urls["demo"], headers={"If-None-Match": held[urls["demo"]]})
    assert (weighed.status_code, weighed.json()["probability"]) == (200, "0.700")
    assert weighed.headers["etag"] != held[urls["demo"]]
