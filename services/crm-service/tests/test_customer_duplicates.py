"""`GET /v1/customers/{id}/duplicates`: the customers who may be the same person, found through
the search's trigram index, scored by name similarity plus what else they share, best first."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from crm.customers import duplicates
from cxkit.testing import bearer


async def look_alikes(client: httpx.AsyncClient, customer_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/customers/{customer_id}/duplicates", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def nameless_lead(client: httpx.AsyncClient, email: str) -> str:
    """A lead-stage customer with an address and no name, as an interaction from an unknown address makes."""
    r = await client.post("/v1/interactions", json={"customer_email": email, "type": "call"})
    assert r.status_code == 201, r.text
    return str(r.json()["customer_id"])


async def test_look_alikes_are_ranked_by_name_similarity_and_what_else_they_share(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    ada = await make.customer(
        name="Ada Lovelace", email="ada@analytical.example", phone="+44 20 7946 0018", company="Analytical Engines"
    )
    typo = await make.customer(name="Ada Lovelance", email="countess@example.org", phone="020 7946 0018")
    reversed_ = await make.customer(name="Lovelace, Ada", email="al@example.net", company="analytical  ENGINES")
    home = await make.customer(name="Ada Lovelace", email="ada@home.example")
    by_address = await nameless_lead(client, "ada.lovelace@gmail.example")
    initial = await nameless_lead(client, "a.lovelace@mail.example")
    await make.customer(name="Ada King", email="king@example.com")  # another Ada
    await make.customer(name="Charles Babbage", email="charles@example.com", phone="+44 20 7946 0018")  # same phone only
    merged = await make.customer(name="Ada Lovelace", email="merged@example.com")
    survivor = await make.customer(name="Someone Else", email="survivor@example.com")
    assert (await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": merged["id"]})).status_code == 200
    erased = await make.customer(name="Ada Lovelace", email="erased@example.com")
    assert (await client.delete(f"/v1/customers/{erased['id']}")).status_code == 204

    found = await look_alikes(client, ada["id"])
    by_id = {c["customer"]["id"]: c for c in found}
    assert set(by_id) == {typo["id"], reversed_["id"], home["id"], by_address, initial}
    assert by_id[typo["id"]]["reasons"] == ["similar_name", "same_phone"]
    assert by_id[reversed_["id"]]["reasons"] == ["same_name", "same_company"]
    assert by_id[home["id"]]["reasons"] == ["same_name", "same_email_local_part"]
    assert by_id[by_address]["reasons"] == ["same_name"]  # its address's local part, `ada.lovelace`, is her name
    assert by_id[typo["id"]]["customer"]["name"] == "Ada Lovelance"  # the whole customer, as a read answers it
    scores = [c["score"] for c in found]
    assert scores == sorted(scores, reverse=True) and all(duplicates.MIN_SCORE <= s <= 1 for s in scores)
    assert [c["customer"]["id"] for c in found[2:]] == [by_address, typo["id"], initial]
    assert by_id[reversed_["id"]]["score"] == by_id[home["id"]]["score"] == 0.82  # 0.75 x 1 + 0.25 x 0.3
    assert by_id[by_address]["score"] == 0.75  # the same name and nothing else

    # The names' part of a score is PostgreSQL's trigram similarity.
    async with session_factory() as session:
        typo_similarity = await session.scalar(text("SELECT similarity('Ada Lovelance', 'Ada Lovelace')"))
        initial_similarity = await session.scalar(text("SELECT similarity('a.lovelace', 'Ada Lovelace')"))
    assert by_id[typo["id"]]["score"] == round(0.75 * typo_similarity + 0.25 * 0.6, 2)
    assert by_id[initial]["reasons"] == ["similar_name"]
    assert by_id[initial]["score"] == round(0.75 * initial_similarity, 2)

    best_two = await look_alikes(client, ada["id"], limit=2)
    assert [c["customer"]["id"] for c in best_two] == [c["customer"]["id"] for c in found[:2]]
    # Both ways: the typo finds Ada too, and a lead known by its address alone finds the Adas by it.
    assert ada["id"] in {c["customer"]["id"] for c in await look_alikes(client, typo["id"])}
    assert {ada["id"], home["id"]} <= {c["customer"]["id"] for c in await look_alikes(client, by_address)}


async def test_among_more_namesakes_than_are_compared_those_sharing_a_detail_are_still_found(
    client: httpx.AsyncClient, make: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(duplicates, "CANDIDATES", 2)  # as if thousands shared the name
    grace = await make.customer(name="Grace Hopper", email="grace@navy.example", phone="+1 202 555 0143")
    for i in range(6):
        await make.customer(name="Grace Hopper", email=f"gh{i}@example.com")
    same_phone = await make.customer(name="Grace Hopper", email="admiral@example.org", phone="(202) 555-0143")
    found = await look_alikes(client, grace["id"])
    assert found[0]["customer"]["id"] == same_phone["id"] and found[0]["reasons"] == ["same_name", "same_phone"]
    assert found[0]["score"] == 0.9


async def test_customers_without_a_probe_have_none_and_reads_follow_the_usual_rules(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    await make.customer(name="Jo", email="jo@example.com")
    short = await make.customer(name="Jo", email="j@example.com")
    assert await look_alikes(client, short["id"]) == []  # a two-letter name and a one-letter address find nothing
    # A two-letter name with a longer address: the address's local part is looked up instead.
    jo = await make.customer(name="Jo", email="jo.march@example.com")
    same_address = await make.customer(name="Josephine", email="jo.march@home.example")
    full_name = await make.customer(name="Jo March", email="author@example.org")
    found = {c["customer"]["id"]: c["reasons"] for c in await look_alikes(client, jo["id"])}
    assert found == {same_address["id"]: ["same_name", "same_email_local_part"], full_name["id"]: ["same_name"]}
    erased = await make.customer(name="Grace Hopper", email="grace@example.com")
    await make.customer(name="Grace Hopper", email="g.hopper@example.com")
    assert (await client.delete(f"/v1/customers/{erased['id']}")).status_code == 204
    assert await look_alikes(client, erased["id"]) == []  # nothing personal is left to compare

    survivor = await make.customer(name="Alan Turing", email="alan@example.com")
    duplicate = await make.customer(name="Alan Turing", email="a.turing@example.com")
    assert await look_alikes(client, survivor["id"]) != []
    assert (await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})).status_code == 200
    moved = await client.get(f"/v1/customers/{duplicate['id']}/duplicates", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"].endswith(f"/v1/customers/{survivor['id']}/duplicates")
    assert await look_alikes(client, survivor["id"]) == []  # the merged duplicate is no longer offered

    missing = await client.get(f"/v1/customers/{uuid.uuid4()}/duplicates")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    for limit in (0, 51, "x"):
        r = await client.get(f"/v1/customers/{survivor['id']}/duplicates", params={"limit": limit})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "limit"], r.text
    assert (await client.get(f"/v1/customers/{survivor['id']}/duplicates", headers=bearer(keys["read"]))).status_code == 200
    assert (await client.get(f"/v1/customers/{survivor['id']}/duplicates", headers={"Authorization": ""})).status_code == 401


async def test_a_short_name_is_still_compared_with_its_namesakes_by_the_name_itself(client: httpx.AsyncClient, make: Any) -> None:
    """A name of one or two letters has no trigram to look up, but the very same name is still
    found through the name index when the two share a detail: it was left out (no probe, nothing
    found), or the namesakes were asked for the email's local part as their name."""
    wang = await make.customer(name="王伟", email="w@example.cn", phone="+86 138 0013 8000")
    same_phone = await make.customer(name="王伟", email="wei.wang@example.com", phone="138 0013 8000")
    await make.customer(name="王伟", email="x@example.com")  # a namesake sharing nothing else
    found = await look_alikes(client, wang["id"])
    assert [(c["customer"]["id"], c["reasons"], c["score"]) for c in found] == [
        (same_phone["id"], ["same_name", "same_phone"], 0.9)
    ]
    assert [c["customer"]["id"] for c in await look_alikes(client, same_phone["id"])] == [wang["id"]]

    # A longer address: its local part is what the trigram index is asked for, the name still what namesakes are.
    li = await make.customer(name="李娜", email="lina.li@example.com", company="Tennis Co")
    same_company = await make.customer(name="李娜", email="na@example.org", company="tennis  CO")
    found = await look_alikes(client, li["id"])
    assert [(c["customer"]["id"], c["reasons"], c["score"]) for c in found] == [
        (same_company["id"], ["same_name", "same_company"], 0.82)
    ]


async def test_the_look_alikes_are_found_through_the_indexes_in_custom_and_generic_plans(session_factory: Any) -> None:
    """The statement can only be fast at a million customers if the indexes answer both of its
    sources (the search's trigram index, the name index), also once PostgreSQL plans the
    prepared statement for any probe."""
    kinds = ("uuid", "text", "int", "text", "text", "text", "int", "text")
    sql = re.sub(r"\$(\d)", lambda m: f"{m[0]}::{kinds[int(m[1]) - 1]}", duplicates.CANDIDATES_SQL)
    async with session_factory() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text(f"PREPARE look_alikes AS {sql}"))
        args = f"'{uuid.uuid4()}', 'Ada Lovelace', 500, '079460018', 'analytical engines', 'ada', 5000, 'Ada Lovelace'"
        for mode in ("force_custom_plan", "force_generic_plan"):
            await session.execute(text(f"SET LOCAL plan_cache_mode = {mode}"))
            plan = "\n".join((await session.execute(text(f"EXPLAIN EXECUTE look_alikes({args})"))).scalars())
            assert "Bitmap Index Scan on ix_customers_search_trgm" in plan, (mode, plan)
            assert "using ix_customers_name_id" in plan or "on ix_customers_name_id" in plan, (mode, plan)
        await session.execute(text("DEALLOCATE look_alikes"))
