"""`POST /v1/customers/batch`: an upsert of up to 1,000 customers by external_id or email, one
result per item in order, events only for real changes, one Idempotency-Key for the batch."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from cxkit import testing


async def batch(client: httpx.AsyncClient, items: list[dict[str, Any]], **headers: str) -> httpx.Response:
    return await client.post("/v1/customers/batch", json={"items": items}, headers=headers)


async def test_items_are_created_updated_or_left_unchanged_in_order_with_one_event_per_real_change(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    by_email = await make.customer(email="ada@example.com", name="Ada", tags=["a"])
    by_external = await make.customer(email="bob@example.com", name="Bob", external_id="shop-2")
    same = await make.customer(email="carl@example.com", name="Carl", company="C Ltd")
    before = {e["id"] for e in await events()}
    response = await batch(
        client,
        [
            {"email": "new@example.com", "name": "New", "external_id": "shop-9", "tags": ["x", "x", "b"]},
            {"email": "ada@example.com", "external_id": "shop-1", "lifecycle_stage": "customer"},
            {"external_id": "shop-2", "email": "bobby@example.com", "name": "Bobby"},
            {"email": "carl@example.com", "name": "Carl", "company": "C Ltd"},
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert [r["status"] for r in body["results"]] == ["created", "updated", "updated", "unchanged"]
    assert body["counts"] == {"created": 1, "updated": 2, "unchanged": 1, "error": 0}
    created, ada, bob, carl = (r["customer"] for r in body["results"])
    assert created["tags"] == ["b", "x"] and created["external_id"] == "shop-9" and created["version"] == 1
    assert ada["id"] == by_email["id"] and ada["external_id"] == "shop-1" and ada["lifecycle_stage"] == "customer"
    assert ada["tags"] == ["a"] and ada["version"] == 2
    assert body["results"][1]["changed"] == ["external_id", "lifecycle_stage"]
    assert bob["id"] == by_external["id"] and bob["email"] == "bobby@example.com" and bob["name"] == "Bobby"
    assert body["results"][2]["changed"] == ["email", "name"]
    assert carl == (await client.get(f"/v1/customers/{same['id']}")).json()

    new_events = [e for e in await events() if e["id"] not in before]
    assert sorted((e["type"], e["subject"]) for e in new_events) == sorted(
        [("customer.created", created["id"]), ("customer.updated", ada["id"]), ("customer.updated", bob["id"])]
    )
    updated_bob = next(e for e in new_events if e["subject"] == bob["id"])
    assert updated_bob["data"]["changed"] == ["email", "name"] and updated_bob["data"]["version"] == 2
    assert (await client.get("/v1/customers", params={"external_id": "shop-1"})).json()["items"][0]["id"] == ada["id"]


async def test_bad_items_get_their_own_problem_and_the_others_are_applied(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    await make.customer(email="taken@example.com", name="Taken")
    await make.customer(email="other@example.com", name="Other", external_id="ext-other")
    erased = await make.customer(email="gone@example.com", name="Gone")
    assert (await client.delete(f"/v1/customers/{erased['id']}")).status_code == 204
    campaign = uuid.uuid4()
    response = await batch(
        client,
        [
            {"email": "ok@example.com", "name": "Ok"},  # 0
            {"email": "not-an-email", "name": "Bad"},  # 1
            {"name": "No key"},  # 2
            {"email": "OK@example.com", "name": "Again"},  # 3: repeats item 0
            {"external_id": "unknown-ext", "name": "No email"},  # 4: new, no email
            {"email": "other@example.com", "external_id": "ext-new"},  # 5: email held by another external id
            {"email": "x@example.com", "name": "X", "campaign_id": str(campaign)},  # 6
            {"external_id": "ext-other", "email": "taken@example.com"},  # 7: email taken
            {"email": "y@example.com", "name": "Y", "surprise": 1},  # 8
            {"email": "z@example.com", "name": None},  # 9
        ],
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["created"] + ["error"] * 9
    problems = [r["problem"] for r in results[1:]]
    assert [p["status"] for p in problems] == [422, 422, 409, 422, 409, 422, 409, 422, 422]
    # Shaped as the answer of a single write: the same type and title as a 409 or 422 problem+json.
    single = await client.post("/v1/customers", json={"email": "taken@example.com", "name": "T"})
    assert single.status_code == 409
    assert (problems[2]["type"], problems[2]["title"]) == (single.json()["type"], single.json()["title"])
    assert {(p["type"], p["title"]) for p in problems if p["status"] == 422} == {
        ("https://cx.example.org/problems/unprocessable", "Unprocessable content")
    }
    assert problems[0]["errors"][0]["loc"] == ["email"]
    assert problems[2]["detail"] == "duplicate of item 0 in this batch (same email)"
    assert problems[3]["errors"] == [{"loc": ["email"], "msg": "Field required", "type": "missing"}]
    assert "another external_id" in problems[4]["detail"]
    assert problems[5]["errors"][0]["loc"] == ["campaign_id"]
    assert "already exists" in problems[6]["detail"]
    assert problems[7]["errors"][0]["loc"] == ["surprise"]
    assert len([e for e in await events("customer.created") if e["data"]["email"] == "ok@example.com"]) == 1
    assert len(await events("customer.updated")) == 0

    repeat_erased = await batch(client, [{"email": "fresh@example.com", "name": "F"}, {"external_id": "ext-other", "name": "O2"}])
    assert [r["status"] for r in repeat_erased.json()["results"]] == ["created", "updated"]


async def test_the_batch_is_limited_and_one_idempotency_key_covers_it(
    client: httpx.AsyncClient, keys: dict[str, str], events: Any
) -> None:
    too_many = await batch(client, [{"email": f"u{i}@example.com", "name": "U"} for i in range(1001)])
    assert too_many.status_code == 422 and too_many.headers["content-type"] == "application/problem+json"
    assert (await batch(client, [])).status_code == 422
    reader = testing.bearer(keys["read"])
    assert (
        await client.post("/v1/customers/batch", json={"items": [{"email": "r@example.com"}]}, headers=reader)
    ).status_code == 403
    assert (await client.get("/v1/customers/batch")).status_code == 405

    items = [{"email": f"k{i}@example.com", "name": f"K {i}", "external_id": f"k-{i}"} for i in range(1000)]
    first = await batch(client, items, **{"Idempotency-Key": "batch-1"})
    assert first.json()["counts"]["created"] == 1000
    again = await batch(client, items, **{"Idempotency-Key": "batch-1"})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert len(await events("customer.created")) == 1000
    fresh = await batch(client, items)
    assert fresh.json()["counts"] == {"created": 0, "updated": 0, "unchanged": 1000, "error": 0}


async def test_external_id_is_unique_on_create_and_patch_and_can_be_cleared(client: httpx.AsyncClient, make: Any) -> None:
    holder = await make.customer(external_id="crm-1")
    other = await make.customer()
    taken = await client.post("/v1/customers", json={"email": "n@example.com", "name": "N", "external_id": "crm-1"})
    assert taken.status_code == 409 and "external_id" in taken.json()["detail"]
    patched = await client.patch(f"/v1/customers/{other['id']}", json={"external_id": "crm-1"})
    assert patched.status_code == 409
    assert (await client.patch(f"/v1/customers/{holder['id']}", json={"external_id": None})).json()["external_id"] is None
    moved = await client.patch(f"/v1/customers/{other['id']}", json={"external_id": " crm-1 "})
    assert moved.status_code == 200 and moved.json()["external_id"] == "crm-1"


async def test_a_batch_update_keeps_the_email_key_of_a_unicode_address_so_it_stays_unique(
    client: httpx.AsyncClient, events: Any
) -> None:
    """The key an email is found by is lower-cased in Python everywhere: PostgreSQL's lower()
    folds 'İ' and a final 'Σ' otherwise, and a batch update once rewrote the key with it."""
    for email in ("İnci@example.com", "ΟΔΥΣΣΕΥΣ@example.com"):
        created = await batch(client, [{"email": email, "name": "A"}])
        assert created.json()["results"][0]["status"] == "created", created.text
        cid = created.json()["results"][0]["customer"]["id"]
        updated = await batch(client, [{"email": email, "name": "B"}])
        assert [(r["status"], r["customer"]["id"]) for r in updated.json()["results"]] == [("updated", cid)]
        again = await batch(client, [{"email": email, "name": "C"}])
        assert [(r["status"], r["customer"]["id"]) for r in again.json()["results"]] == [("updated", cid)]
        single = await client.post("/v1/customers", json={"email": email, "name": "D"})
        assert single.status_code == 409, single.text
    assert len(await events("customer.created")) == 2


async def test_a_json_true_is_not_the_number_one_in_a_batch_update(client: httpx.AsyncClient, make: Any, events: Any) -> None:
    customer = await make.customer(email="vip@example.com", attributes={"vip": 1, "deep": {"on": 0}})
    response = await batch(client, [{"email": "vip@example.com", "attributes": {"vip": True, "deep": {"on": 0}}}])
    [result] = response.json()["results"]
    assert (result["status"], result["changed"]) == ("updated", ["attributes"]), response.text
    assert result["customer"]["attributes"] == {"vip": True, "deep": {"on": 0}} and result["customer"]["version"] == 2
    nested = await batch(client, [{"email": "vip@example.com", "attributes": {"vip": True, "deep": {"on": False}}}])
    assert nested.json()["results"][0]["changed"] == ["attributes"], nested.text
    [first, second] = await events("customer.updated")
    assert first["subject"] == customer["id"] and first["data"]["changed"] == ["attributes"]
    assert second["data"]["version"] == 3
    # The same number written another way is the same value (as PostgreSQL's jsonb compares).
    same = await batch(client, [{"email": "vip@example.com", "attributes": {"deep": {"on": False}, "vip": True}}])
    assert same.json()["results"][0]["status"] == "unchanged", same.text
    await batch(client, [{"email": "vip@example.com", "attributes": {"n": 2}}])
    assert (await batch(client, [{"email": "vip@example.com", "attributes": {"n": 2.0}}])).json()["results"][0][
        "status"
    ] == "unchanged"


async def test_a_nul_in_one_item_is_that_items_problem_and_the_others_are_applied(client: httpx.AsyncClient, events: Any) -> None:
    response = await batch(
        client,
        [
            {"email": "a@example.com", "name": "x", "attributes": {"k": "\u0000"}},
            {"email": "b@example.com", "name": "y"},
            {"email": "c@example.com", "name": "z\u0000"},
        ],
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["error", "created", "error"]
    assert [(r["problem"]["status"], r["problem"]["errors"][0]["loc"]) for r in (results[0], results[2])] == [
        (422, ["attributes", "k"]),
        (422, ["name"]),
    ]
    assert "NUL" in results[0]["problem"]["errors"][0]["msg"]
    assert [e["data"]["email"] for e in await events("customer.created")] == ["b@example.com"]
    # Outside the items, a NUL still refuses the whole body.
    whole = await client.post("/v1/customers/batch", json={"items": [{"email": "d@example.com", "name": "d"}], "x\u0000": 1})
    assert whole.status_code == 422 and whole.headers["content-type"] == "application/problem+json"
