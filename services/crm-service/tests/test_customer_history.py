"""A customer's field history (`GET /v1/customers/{id}/history`): every path that changes a
customer is recorded with who and how, and an erasure takes the personal values out of it."""

from __future__ import annotations

import uuid
from typing import Any, get_args

import httpx
from sqlalchemy import text

from crm.customers import service
from crm.customers.models import ERASED_FIELDS, TRACKED_FIELDS
from crm.customers.schemas import HistoryField
from cxkit.testing import bearer, every_item


async def _history(client: httpx.AsyncClient, customer_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/customers/{customer_id}/history", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _changes(entry: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {c["field"]: (c["from"], c["to"]) for c in entry["changes"]}


async def test_patches_and_batches_are_recorded_with_who_how_and_the_values(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str], session_factory: Any
) -> None:
    created = await make.customer(name="Ada", owner="kim", tags=["a"], external_id="shop-1")
    cid = created["id"]
    assert await _history(client, cid) == []  # a creation is the record itself

    change = {"owner": "lee", "lifecycle_stage": "mql", "tags": ["a", "vip"]}
    r = await client.patch(f"/v1/customers/{cid}", json=change, headers=bearer(keys["write"]))
    assert r.status_code == 200, r.text
    assert (await client.patch(f"/v1/customers/{cid}", json={"owner": "lee"})).json()["version"] == 2  # no change, no entry
    batch = await client.post("/v1/customers/batch", json={"items": [{"external_id": "shop-1", "owner": "max", "phone": "+1"}]})
    assert batch.json()["results"][0]["status"] == "updated", batch.text

    newest, oldest = await _history(client, cid)
    assert (oldest["version"], oldest["changed_by"], oldest["via"]) == (2, "test-write", "update")
    assert _changes(oldest) == {"lifecycle_stage": ("lead", "mql"), "owner": ("kim", "lee"), "tags": (["a"], ["a", "vip"])}
    assert [c["field"] for c in oldest["changes"]] == ["lifecycle_stage", "owner", "tags"]
    assert (newest["version"], newest["changed_by"], newest["via"]) == (3, "test-admin", "batch")
    assert _changes(newest) == {"owner": ("lee", "max"), "phone": (None, "+1")}
    assert newest["seq"] > oldest["seq"] and newest["changed_at"] >= oldest["changed_at"]
    current = (await client.get(f"/v1/customers/{cid}")).json()
    assert newest["changed_at"].replace("Z", "+00:00") == current["updated_at"].replace("Z", "+00:00")

    # One field's story, page by page.
    assert [_changes(e)["owner"] for e in await _history(client, cid, field="owner")] == [("lee", "max"), ("kim", "lee")]
    assert [e["version"] for e in await _history(client, cid, field="phone")] == [3]
    first = (await client.get(f"/v1/customers/{cid}/history", params={"limit": 1})).json()
    assert [e["version"] for e in first["items"]] == [3] and first["next_cursor"]
    second = (await client.get(f"/v1/customers/{cid}/history", params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert [e["version"] for e in second["items"]] == [2] and second["next_cursor"] is None

    # The database records any change, whatever path makes it (who and how unknown here).
    async with session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE customers SET company = 'Engines', version = version + 1 WHERE id = :id"), {"id": uuid.UUID(cid)}
        )
    latest = (await _history(client, cid))[0]
    assert (latest["version"], latest["changed_by"], latest["via"]) == (4, None, None)
    assert _changes(latest) == {"company": (None, "Engines")}

    assert (await client.get(f"/v1/customers/{uuid.uuid4()}/history")).status_code == 404
    bad = await client.get(f"/v1/customers/{cid}/history", params={"field": "version"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/customers/{cid}/history", headers=bearer(keys["read"]))).status_code == 200
    assert (await client.get(f"/v1/customers/{cid}/history", headers=bearer(keys["revoked"]))).status_code == 401


async def test_deals_lead_conversions_and_merges_say_what_changed_the_customer(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer(name="Ada", phone=None)
    cid = customer["id"]
    await make.deal(cid, amount="100.00")  # a lead becomes an opportunity
    lead = await make.lead(name="Ada L.", phone="+44 1", company="Engines")
    converted = await client.post(f"/v1/leads/{lead['id']}/convert", json={"customer_id": cid, "lifecycle_stage": "customer"})
    assert converted.status_code == 200, converted.text

    by_deal, *by_lead = reversed(await _history(client, cid))
    assert (by_deal["via"], by_deal["changed_by"]) == ("deal", "test-admin")
    assert _changes(by_deal) == {"lifecycle_stage": ("lead", "opportunity")}
    assert {e["via"] for e in by_lead} == {"lead_conversion"}
    assert {f: v for e in by_lead for f, v in _changes(e).items()} == {
        "phone": (None, "+44 1"),
        "company": (None, "Engines"),
        "lifecycle_stage": ("opportunity", "customer"),
    }

    duplicate = await make.customer(name="Ada Lovelace", source="fair", tags=["b"])
    merged = await client.post(f"/v1/customers/{cid}/merge", json={"duplicate_id": duplicate["id"]})
    assert merged.status_code == 200, merged.text
    filled = (await _history(client, cid))[0]
    assert filled["via"] == "merge" and filled["version"] == merged.json()["version"]
    assert _changes(filled) == {"source": (None, "fair"), "tags": ([], ["b"])}
    # The duplicate keeps its own history (no redirect here): it was merged away.
    (away,) = await _history(client, duplicate["id"])
    assert away["via"] == "merge" and _changes(away) == {"merged_into_id": (None, cid)}


async def test_an_erasure_takes_the_personal_values_out_of_the_history(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    customer = await make.customer(email="hist.erase@example.com", name="Grace Hopper", owner="kim")
    cid = customer["id"]
    patch = {"name": "Grace B. Hopper", "phone": "+1 555 0100", "company": "Navy", "attributes": {"rank": "admiral"}}
    assert (await client.patch(f"/v1/customers/{cid}", json=patch)).status_code == 200
    assert (await client.patch(f"/v1/customers/{cid}", json={"email": "grace@example.com", "owner": "lee"})).status_code == 200
    assert (await client.delete(f"/v1/customers/{cid}")).status_code == 204

    erasure, second, first = await _history(client, cid)
    assert erasure["via"] == "erasure" and erasure["changed_by"] == "test-admin"
    erased = _changes(erasure)
    assert erased["erased_at"][0] is None and erased["erased_at"][1] is not None
    assert {f: erased[f] for f in ERASED_FIELDS} == {f: (None, None) for f in ERASED_FIELDS}
    assert _changes(first) == {f: (None, None) for f in ("name", "phone", "company", "attributes")}
    assert _changes(second) == {"email": (None, None), "owner": ("kim", "lee")}  # not personal: kept

    async with session_factory() as session:
        kept = await session.scalar(
            text(
                "SELECT count(*) FROM customer_changes WHERE changes::text ~* 'grace|hopper|navy|admiral|555 0100' "
                "OR changed_by ~* 'grace'"
            )
        )
    assert kept == 0


async def test_the_timeline_shows_each_change_as_the_history_records_it(client: httpx.AsyncClient, make: Any) -> None:
    cid = (await make.customer(name="Ada", owner="kim"))["id"]
    for n, owner in enumerate(("lee", "max", "sam")):
        await make.interaction(customer_id=cid, type="call", summary=f"call {n}")
        r = await client.patch(f"/v1/customers/{cid}", json={"owner": owner, "tags": [f"t{n}"]})
        assert r.status_code == 200, r.text
    await make.interaction(customer_id=cid, type="email", summary="after")

    # Page by page (two entries a page), the changes interleave with the interactions by time.
    url = f"/v1/customers/{cid}/timeline"
    entries = await every_item(client, url, limit=2)
    assert [e["kind"] for e in entries] == ["interaction", *["customer_changed", "interaction"] * 3]
    assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)

    history = await _history(client, cid)
    changed = [e for e in entries if e["kind"] == "customer_changed"]
    assert [e["id"] for e in changed] == [h["id"] for h in history]
    for entry, recorded in zip(changed, history, strict=True):
        assert {k: entry[k] for k in ("version", "changed_by", "via", "changes")} == {
            k: recorded[k] for k in ("version", "changed_by", "via", "changes")
        }
        assert entry["at"].replace("Z", "+00:00") == recorded["changed_at"].replace("Z", "+00:00")
    assert _changes(changed[0]) == {"owner": ("max", "sam"), "tags": (["t1"], ["t2"])}
    assert (changed[-1]["version"], changed[-1]["changed_by"], changed[-1]["via"]) == (2, "test-admin", "update")

    only = (await client.get(url, params={"kind": "customer_changed"})).json()["items"]
    assert [e["id"] for e in only] == [h["id"] for h in history]


def test_the_field_parameter_names_every_recorded_field_and_the_erased_ones_are_the_erasure_s() -> None:
    assert set(get_args(HistoryField)) == set(TRACKED_FIELDS)
    # The trigger's list (migration crm0016) is ERASED_FIELDS: what an erasure blanks, less the
    # lower-cased email the history leaves out, plus the attributes it empties.
    assert set(ERASED_FIELDS) == set(service._PERSONAL) - {"email_normalized"} | {"attributes"}
