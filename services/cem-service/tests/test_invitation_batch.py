"""`POST /v1/surveys/{id}/invitations/batch`: a survey sent to a list. One result per item, in
order; each item is judged as a single request would be; a few statements whatever the size."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from cxkit.testing import bearer, statements_sent

from .test_customer_events import erased, merged


def batch_url(survey: dict[str, Any]) -> str:
    return f"/v1/surveys/{survey['id']}/invitations/batch"


async def test_each_item_is_invited_or_refused_as_a_single_request_would_be_in_order(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any
) -> None:
    await make.touchpoint("checkout")
    await make.touchpoint("delivery")
    survey = await make.survey("nps", touchpoint="checkout")
    known = await make.customer(email="ada@example.com")
    opted_out = await make.customer(survey_opt_out=True)
    gone = await make.customer()
    await apply(erased(gone))
    survivor, duplicate = await make.customer(), await make.customer()
    await apply(merged(survivor, duplicate))
    unknown = uuid.uuid4()

    items: list[dict[str, Any]] = [
        {"customer_id": str(known), "channel": "email"},  # 0 created
        {"email": "walk-in@example.net", "touchpoint": "delivery", "expires_in_days": 3},  # 1 created, bare address
        {"customer_id": str(opted_out)},  # 2 opted out
        {"customer_id": str(gone)},  # 3 erased
        {"customer_id": str(unknown)},  # 4 never announced
        {"customer_id": str(known), "email": "ada@example.com"},  # 5 not valid: both
        {"email": "ADA@example.com"},  # 6 the customer of item 0, by address
        {"customer_id": str(duplicate)},  # 7 created, for the survivor
        {"customer_id": str(survivor)},  # 8 the recipient of item 7
        {"email": "someone@example.org", "touchpoint": "nowhere"},  # 9 unknown touchpoint
        {"email": "Walk-In@example.net"},  # 10 the bare address of item 1
    ]
    r = await client.post(batch_url(survey), json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(items)))
    assert [x["status"] for x in results] == [
        "created", "created", "error", "error", "error", "error", "error", "created", "error", "error", "error",
    ]  # fmt: skip
    assert body["counts"] == {"created": 3, "error": 8}

    problems = {x["index"]: x["problem"] for x in results if x["status"] == "error"}
    assert {i: p["status"] for i, p in problems.items()} == {2: 409, 3: 409, 4: 422, 5: 422, 6: 409, 8: 409, 9: 422, 10: 409}
    assert "opted out" in problems[2]["detail"] and "erased" in problems[3]["detail"]
    assert problems[4]["errors"][0]["loc"] == ["customer_id"] and "not known" in problems[4]["detail"]
    assert problems[5]["errors"] and problems[5]["type"].endswith("/unprocessable")
    assert "item 0" in problems[6]["detail"] and problems[6]["errors"][0]["loc"] == ["email"]
    assert "item 7" in problems[8]["detail"] and problems[8]["errors"][0]["loc"] == ["customer_id"]
    assert problems[9]["errors"][0]["loc"] == ["touchpoint"]
    assert "item 1" in problems[10]["detail"] and problems[10]["type"].endswith("/conflict")

    made = {x["index"]: x["invitation"] for x in results if x["status"] == "created"}
    assert made[0]["customer_id"] == str(known) and made[0]["touchpoint"] == "checkout" and made[0]["channel"] == "email"
    assert made[1]["customer_id"] is None and made[1]["email"] == "walk-in@example.net" and made[1]["touchpoint"] == "delivery"
    assert made[7]["customer_id"] == str(survivor)  # a merged duplicate's survivor, as for one request
    for invitation in made.values():
        assert invitation["status"] == "sent" and invitation["url"].endswith(f"/r/{invitation['token']}")
        assert (await client.get(f"/v1/invitations/{invitation['id']}")).json()["status"] == "sent"
        page = await client.get(f"/r/{invitation['token']}", headers={"Authorization": ""})
        assert page.status_code == 200, invitation
    # Each one made is announced once; nothing for the refused items.
    announced = {e["data"]["invitation_id"]: e["data"] for e in await outbox("survey.invited")}
    assert set(announced) == {i["id"] for i in made.values()}
    assert announced[made[0]["id"]]["email"] == "ada@example.com"
    assert announced[made[1]["id"]]["email"] == "walk-in@example.net"


async def test_the_whole_batch_needs_an_active_survey_a_write_key_and_one_to_1000_items(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    customer = str(await make.customer())
    one = {"items": [{"customer_id": customer}]}
    draft = await make.survey("nps", status="draft")
    refused = await client.post(batch_url(draft), json=one)
    assert refused.status_code == 409 and "draft" in refused.json()["detail"]
    missing = await client.post(f"/v1/surveys/{uuid.uuid4()}/invitations/batch", json=one)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    active = await make.survey("csat")
    assert (await client.post(batch_url(active), json=one, headers=bearer(keys["read"]))).status_code == 403
    assert (await client.post(batch_url(active), json=one, headers={"Authorization": ""})).status_code == 401
    for bad in [{"items": []}, {"items": [{"customer_id": customer}] * 1001}, {}, {"items": "x"}, {"items": [], "x": 1}]:
        r = await client.post(batch_url(active), json=bad)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert (await client.get(f"/v1/surveys/{active['id']}/invitations")).json()["items"] == []


async def test_an_idempotency_key_covers_the_whole_batch(client: httpx.AsyncClient, make: Any, outbox: Any) -> None:
    survey = await make.survey("nps")
    body = {"items": [{"customer_id": str(await make.customer())} for _ in range(3)]}
    first = await client.post(batch_url(survey), json=body, headers={"Idempotency-Key": "list-send-1"})
    again = await client.post(batch_url(survey), json=body, headers={"Idempotency-Key": "list-send-1"})
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert len((await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]) == 3
    assert len(await outbox("survey.invited")) == 3
    other = await client.post(batch_url(survey), json={"items": body["items"][:1]}, headers={"Idempotency-Key": "list-send-1"})
    assert other.status_code == 422, other.text  # the same key with another body


async def test_a_batch_takes_the_same_few_statements_whatever_its_size(
    client: httpx.AsyncClient, make: Any, cem_app: FastAPI
) -> None:
    survey = await make.survey("nps")
    counts = []
    texts: list[list[str]] = []
    for size in (5, 200):
        items = [{"customer_id": str(await make.customer())} for _ in range(size // 2)]
        items += [{"email": f"list-{size}-{i}@example.net"} for i in range(size - len(items))]
        # The key's lookup is cached for API_KEY_CACHE_SECONDS: a read just before keeps it out of
        # the count (making the 100 customers above took longer than that once in CI).
        assert (await client.get(f"/v1/surveys/{survey['id']}")).status_code == 200
        with statements_sent(cem_app) as seen:
            r = await client.post(batch_url(survey), json={"items": items})
        assert r.status_code == 200 and r.json()["counts"] == {"created": size, "error": 0}, r.text
        counts.append(len(seen))
        texts.append([t for t, _ in seen])
    assert counts[0] == counts[1], (counts, texts)


async def test_a_nul_in_one_item_is_that_items_problem_and_the_others_are_invited(
    client: httpx.AsyncClient, make: Any, outbox: Any
) -> None:
    survey = await make.survey("nps")
    items = [{"email": "nul@example.com", "touchpoint": "check\u0000out"}, {"email": "fine@example.com"}]
    r = await client.post(batch_url(survey), json={"items": items})
    assert r.status_code == 200, r.text
    refused, invited = r.json()["results"]
    assert refused["status"] == "error" and refused["problem"]["status"] == 422
    assert refused["problem"]["errors"][0]["loc"] == ["touchpoint"]
    assert invited["status"] == "created" and invited["invitation"]["email"] == "fine@example.com"
    assert [e["data"]["email"] for e in await outbox("survey.invited")] == ["fine@example.com"]
    # Elsewhere in the body a NUL is the whole request's, as in any body.
    whole = await client.post(batch_url(survey), json={"items": items[1:], "note\u0000": 1})
    assert whole.status_code == 422 and whole.headers["content-type"] == "application/problem+json"
