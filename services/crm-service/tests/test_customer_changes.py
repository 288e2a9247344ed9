"""Customers: PATCH with If-Match, search/filter/sort, merge of duplicates, GDPR erasure."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import httpx
from sqlalchemy import event, func, select, text

from crm.customers.models import SEARCH_SEPARATOR, Customer
from crm.customers.repository import SEARCH_PROBE_FROM, SORT_KEYS, CustomerFilters, CustomerRepository, matching
from crm.db import IdempotencyKey
from crm.documents.models import Document
from crm.interactions.models import Interaction
from crm.leads.models import Lead
from crm.tasks.models import Task
from cxkit import keyset
from cxkit.http.pagination import PageParams
from cxkit.testing import bearer, plan_nodes

# --- PATCH ---------------------------------------------------------------------------------


async def test_patch_changes_fields_bumps_version_and_announces_changed_fields(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    created = await make.customer(name="Ada", tags=["b"])
    r = await client.patch(f"/v1/customers/{created['id']}", json={"name": "Ada L.", "tags": ["vip", "vip"], "phone": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "Ada L." and body["tags"] == ["vip"] and body["version"] == 2
    assert r.headers["etag"] == '"2"'
    updated = await events("customer.updated")
    assert len(updated) == 1
    assert updated[0]["data"]["changed"] == ["name", "tags"]  # phone was already null: not a change
    assert updated[0]["data"]["version"] == 2 and updated[0]["subject"] == created["id"]
    assert updated[0]["data"]["open_deal_value"] == "0.00"


async def test_patch_without_a_change_keeps_the_version_and_announces_nothing(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    created = await make.customer(name="Same")
    r = await client.patch(f"/v1/customers/{created['id']}", json={"name": "Same"})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert await events("customer.updated") == []


async def test_patch_with_stale_if_match_is_412_and_changes_nothing(client: httpx.AsyncClient, make: Any) -> None:
    created = await make.customer()
    path = f"/v1/customers/{created['id']}"
    ok = await client.patch(path, json={"company": "A"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json()["version"] == 2
    stale = await client.patch(path, json={"company": "B"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["etag"] == '"2"'
    assert stale.headers["content-type"] == "application/problem+json"
    assert (await client.get(path)).json()["company"] == "A"


async def test_patch_refuses_nulling_required_fields_and_unknown_fields(client: httpx.AsyncClient, make: Any) -> None:
    created = await make.customer()
    path = f"/v1/customers/{created['id']}"
    for body in (
        {"email": None},
        {"name": None},
        {"tags": None},
        {"version": 5},
        {"lifecycle_stage": "king"},
        {"attributes": []},
    ):
        r = await client.patch(path, json=body)
        assert r.status_code == 422, (body, r.text)


async def test_patch_to_an_email_taken_case_insensitively_is_409(client: httpx.AsyncClient, make: Any) -> None:
    await make.customer(email="taken@example.com")
    other = await make.customer()
    r = await client.patch(f"/v1/customers/{other['id']}", json={"email": "TAKEN@example.com"})
    assert r.status_code == 409
    own_case = await client.patch(f"/v1/customers/{other['id']}", json={"email": other["email"].upper()})
    assert own_case.status_code == 200


async def test_patch_unknown_customer_is_404_and_unknown_campaign_is_422(client: httpx.AsyncClient, make: Any) -> None:
    assert (await client.patch(f"/v1/customers/{uuid.uuid4()}", json={"name": "x"})).status_code == 404
    created = await make.customer()
    r = await client.patch(f"/v1/customers/{created['id']}", json={"campaign_id": str(uuid.uuid4())})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "campaign_id"]


async def test_patch_tells_a_json_true_from_the_number_one(client: httpx.AsyncClient, make: Any, events: Any) -> None:
    created = await make.customer(attributes={"vip": 1, "flags": [0]})
    path = f"/v1/customers/{created['id']}"
    r = await client.patch(path, json={"attributes": {"vip": True, "flags": [0]}})
    assert r.status_code == 200, r.text
    assert r.json()["attributes"] == {"vip": True, "flags": [0]} and r.json()["version"] == 2
    nested = await client.patch(path, json={"attributes": {"vip": True, "flags": [False]}})
    assert nested.json()["version"] == 3 and nested.json()["attributes"]["flags"] == [False]
    assert [e["data"]["changed"] for e in await events("customer.updated")] == [["attributes"], ["attributes"]]
    # Key order and how a number is written are not changes.
    same = await client.patch(path, json={"attributes": {"flags": [False], "vip": True}})
    assert same.json()["version"] == 3
    await client.patch(path, json={"attributes": {"n": 1.5, "m": 2}})
    assert (await client.patch(path, json={"attributes": {"n": 1.5, "m": 2.0}})).json()["version"] == 4
    history = (await client.get(f"{path}/history", params={"field": "attributes"})).json()["items"]
    assert [h["version"] for h in history] == [4, 3, 2]


# --- search, filters, sort -------------------------------------------------------------------


async def test_q_searches_name_email_and_company_case_insensitively(client: httpx.AsyncClient, make: Any) -> None:
    by_name = await make.customer(name="Grace Hopper")
    by_email = await make.customer(email="hopperfan@example.com", name="X")
    by_company = await make.customer(name="Y", company="Hopper Labs")
    await make.customer(name="Alan Turing")
    found = (await client.get("/v1/customers", params={"q": "HOPPER"})).json()["items"]
    assert {c["id"] for c in found} == {by_name["id"], by_email["id"], by_company["id"]}
    # LIKE wildcards in the query are matched literally.
    assert (await client.get("/v1/customers", params={"q": "%"})).json()["items"] == []
    assert (await client.get("/v1/customers", params={"q": "_"})).json()["items"] == []


async def test_q_is_answered_from_one_trigram_index_and_never_spans_two_fields(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    """Name, email and company are searched as one value (joined by a newline, the value of
    ix_customers_search_trgm), yet a term is only ever found within one of them."""
    ada = await make.customer(name="Ada Lovelace", email="zed@example.com", company="Analytical Engines")
    await make.customer(name="Charles Babbage", email="cb@example.com")

    async def found(q: str) -> list[str]:
        r = await client.get("/v1/customers", params={"q": q})
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["items"]]

    assert await found("LACE") == [ada["id"]]
    assert await found("zed@EXAMPLE") == [ada["id"]]
    assert await found("engines") == [ada["id"]]
    # The end of the name and the start of the email, with or without what joins them.
    assert await found("lacezed") == []
    assert await found("lace zed") == []
    assert await found("lace\nzed") == []
    assert await found("example.com\nanalytical") == []
    assert await found("\n") == []

    async with session_factory() as session:
        # The migration's function joins with the separator the search code checks terms for.
        joined = await session.scalar(select(func.customer_search_text("a", "b", None)))
        assert joined == f"a{SEARCH_SEPARATOR}b{SEARCH_SEPARATOR}"
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        stmt = select(Customer.id).where(*matching(CustomerFilters(q="lovelace")))
        sql = str(stmt.compile(session.bind, compile_kwargs={"literal_binds": True}))
        plan = "\n".join((await session.execute(text(f"EXPLAIN {sql}"))).scalars())
    assert "Bitmap Index Scan on ix_customers_search_trgm" in plan, plan
    assert "BitmapOr" not in plan, plan


async def test_a_rare_term_is_taken_from_the_trigram_indexes_even_when_the_statistics_call_it_common(
    client: httpx.AsyncClient, session_factory: Any
) -> None:
    """A term PostgreSQL estimates common is looked for among the rows its page would walk
    first: 'Zanzibarr' is in two old customers only, while the statistics (taken when 3,000
    held it) call it common; 'Kilimanjaro' is in five of the newest thousand, 'Serengeti' in
    four."""
    now = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)

    def customer(n: int, name: str, created_at: dt.datetime) -> Customer:
        email = f"c{n}@search.example.com"
        return Customer(
            id=uuid.uuid4(), email=email, email_normalized=email, name=name, tags=[], attributes={},
            created_at=created_at, updated_at=created_at,
        )  # fmt: skip

    async with session_factory() as session, session.begin():
        session.add_all(customer(n, f"Zanzibarr {n}", now - dt.timedelta(days=400)) for n in range(3000))
    async with session_factory() as session, session.begin():
        await session.execute(text("ANALYZE customers"))
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE customers SET name = 'Somebody' WHERE name LIKE 'Zanzibarr %'"))
        rare = [customer(3000 + n, f"Ada Zanzibarr {n}", now - dt.timedelta(days=300 + n)) for n in range(2)]
        newest = [customer(4000 + n, f"Person {n}", now - dt.timedelta(minutes=n)) for n in range(1000)]
        for n in range(5):
            newest[100 * n].name = f"Kilimanjaro {n}"
        for n in range(4):
            newest[100 * n + 50].name = f"Serengeti {n}"
        session.add_all([*rare, *newest])
    async with session_factory() as session:
        plan = await session.scalar(text("EXPLAIN SELECT id FROM customers WHERE name ILIKE '%Zanzibarr%'"))
        estimated = int(re.search(r"rows=(\d+)", plan).group(1))  # type: ignore[union-attr]
        assert estimated > 1000  # the statistics call it common; two customers hold it

    sort, page = keyset.parse_sort("-created_at", SORT_KEYS), PageParams(limit=1, cursor=None)
    async with session_factory() as session:
        repo = CustomerRepository(session)
        # Estimated common: looked for among the newest rows, where it is found rare.
        assert await repo.search_estimate("zanzibarr") >= SEARCH_PROBE_FROM
        assert await repo.search_term_is_rare(CustomerFilters(q="zanzibarr"), sort, page)
        # Estimated rare (left to its plan, which asks the trigram index); the rule where probed:
        assert await repo.search_estimate("Serengeti") < SEARCH_PROBE_FROM
        assert await repo.search_term_is_rare(CustomerFilters(q="Serengeti"), sort, page)
        assert not await repo.search_term_is_rare(CustomerFilters(q="Kilimanjaro"), sort, page)
        assert not await repo.search_term_is_rare(CustomerFilters(q="Person"), sort, page)

    # After a cursor on a name, the probe walks the rows after it as the page does: from the
    # cursor, an index bound, not over every name before it, dropped by a filter.
    deep = PageParams(limit=1, cursor=["name", "Person 900", str(uuid.UUID(int=0))])
    async with session_factory() as session:
        sent: list[tuple[str, Any]] = []
        listener = lambda *args: sent.append((args[2], args[3]))  # noqa: E731 (conn, cursor, statement, parameters, ...)
        event.listen(session.bind.sync_engine, "before_cursor_execute", listener)
        try:
            rare_after = await CustomerRepository(session).search_term_is_rare(
                CustomerFilters(q="Person"), keyset.parse_sort("name", SORT_KEYS), deep
            )
        finally:
            event.remove(session.bind.sync_engine, "before_cursor_execute", listener)
        assert not rare_after  # 'Person 901' ... 'Person 999' and more follow the cursor
        [(probe, parameters)] = [(st, pa) for st, pa in sent if "count(" in st]
        for setting in ("enable_seqscan", "enable_bitmapscan"):
            await session.execute(text(f"SET LOCAL {setting} = off"))
        conn = await session.connection()
        raw = (await conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + probe, tuple(parameters))).scalar()
        [scan] = [n for n in plan_nodes(raw[0]["Plan"]) if n.get("Relation Name") == "customers"]
        assert scan.get("Index Name") == "ix_customers_name_id" and "ROW(" in scan.get("Index Cond", ""), scan
        assert scan.get("Rows Removed by Filter", 0) == 0, scan

    # Both roads give the same pages: newest first, one at a time with the cursor.
    for term, expected in (("zanzibarr", [c.id for c in rare]), ("kilimanjaro", [newest[100 * n].id for n in range(5)])):
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"q": term, "limit": 1, **({"cursor": cursor} if cursor else {})}
            body = (await client.get("/v1/customers", params=params)).json()
            seen += [uuid.UUID(c["id"]) for c in body["items"]]
            if not (cursor := body.get("next_cursor")):
                break
        assert seen == expected


async def test_filters_by_lifecycle_stage_tag_and_owner_combine(client: httpx.AsyncClient, make: Any) -> None:
    match = await make.customer(lifecycle_stage="customer", tags=["vip", "b2b"], owner="sam")
    await make.customer(lifecycle_stage="customer", tags=["b2b"], owner="sam")
    await make.customer(lifecycle_stage="lead", tags=["vip"], owner="sam")
    await make.customer(lifecycle_stage="customer", tags=["vip"], owner="kim")
    r = await client.get("/v1/customers", params={"lifecycle_stage": "customer", "tag": "vip", "owner": "sam"})
    assert [c["id"] for c in r.json()["items"]] == [match["id"]]
    assert len((await client.get("/v1/customers", params={"tag": "vip"})).json()["items"]) == 3
    assert (await client.get("/v1/customers", params={"tag": 'v"ip'})).json()["items"] == []
    assert (await client.get("/v1/customers", params={"lifecycle_stage": "king"})).status_code == 422


async def test_sort_by_name_pages_with_the_cursor_and_puts_nameless_last(client: httpx.AsyncClient, make: Any) -> None:
    for name in ("delta", "alpha", "charlie", "bravo"):
        await make.customer(name=name)
    nameless = await make.interaction(customer_email="noname@example.com")  # makes a customer without a name
    seen: list[str | None] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"sort": "name", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/customers", params=params)).json()
        seen += [c["name"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["alpha", "bravo", "charlie", "delta", None]
    assert nameless["customer_id"]
    desc = (await client.get("/v1/customers", params={"sort": "-name", "limit": 10})).json()["items"]
    assert [c["name"] for c in desc] == ["delta", "charlie", "bravo", "alpha", None]


async def test_a_cursor_from_another_sort_or_a_bad_sort_is_422(client: httpx.AsyncClient, make: Any) -> None:
    for _ in range(3):
        await make.customer()
    cursor = (await client.get("/v1/customers", params={"limit": 1})).json()["next_cursor"]
    assert (await client.get("/v1/customers", params={"sort": "name", "cursor": cursor})).status_code == 422
    assert (await client.get("/v1/customers", params={"sort": "password"})).status_code == 422
    assert (await client.get("/v1/customers", params={"q": "a\x00b"})).status_code == 422


# --- merge -----------------------------------------------------------------------------------


async def test_merge_fills_empty_fields_unites_tags_moves_history_and_frees_the_email(
    client: httpx.AsyncClient, make: Any, events: Any, session_factory: Any
) -> None:
    survivor = await make.customer(name="Ada", phone=None, tags=["a"], attributes={"plan": "pro"})
    duplicate = await make.customer(
        name="Ada Lovelace",
        phone="+44 1",
        company="Engines",
        tags=["b"],
        attributes={"plan": "free", "size": 3},
        survey_opt_out=True,
    )
    await make.interaction(customer_id=duplicate["id"], type="purchase", amount="10.00")
    deal = await make.deal(duplicate["id"], amount="100.00")
    task = await make.task(duplicate["id"])
    campaign = await make.campaign()
    await client.post(f"/v1/campaigns/{campaign['id']}/members", json={"customer_id": duplicate["id"], "response": "clicked"})
    await client.post(f"/v1/campaigns/{campaign['id']}/members", json={"customer_id": survivor["id"]})

    r = await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})
    assert r.status_code == 200, r.text
    merged = r.json()
    assert merged["name"] == "Ada" and merged["phone"] == "+44 1" and merged["company"] == "Engines"
    assert merged["tags"] == ["a", "b"] and merged["attributes"] == {"plan": "pro", "size": 3}
    assert merged["survey_opt_out"] is True and merged["version"] > survivor["version"]

    assert (await client.get(f"/v1/deals/{deal['id']}")).json()["customer_id"] == survivor["id"]
    assert (await client.get(f"/v1/tasks/{task['id']}")).json()["customer_id"] == survivor["id"]
    interactions = (await client.get("/v1/interactions", params={"customer_id": survivor["id"]})).json()["items"]
    assert len(interactions) == 1
    members = (await client.get(f"/v1/campaigns/{campaign['id']}/members")).json()["items"]
    assert [(m["customer_id"], m["responded"]) for m in members] == [(survivor["id"], True)]

    announced = await events("customer.merged")
    assert len(announced) == 1
    data = announced[0]["data"]
    assert data["survivor_id"] == survivor["id"] and data["duplicate_id"] == duplicate["id"]
    assert data["survivor"]["open_deal_value"] == "100.00"

    # The duplicate's email no longer blocks: a new customer may take it.
    assert (await client.post("/v1/customers", json={"email": duplicate["email"], "name": "New"})).status_code == 201


async def test_merge_gives_a_survivor_without_email_or_external_id_the_duplicates(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    """A name-only lead converted into a customer has no email: merged with the customer who
    has one, it takes the address and the external id, and both keep working as its keys."""
    lead = await make.lead(email=None, name="Ada")
    converted = await client.post(f"/v1/leads/{lead['id']}/convert", json={})
    assert converted.status_code == 200, converted.text
    survivor = converted.json()["customer"]
    assert survivor["email"] is None and survivor["external_id"] is None
    duplicate = await make.customer(email="Ada@Example.com", name="Ada L.", external_id="shop-7")

    r = await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})
    assert r.status_code == 200, r.text
    merged = r.json()
    assert (merged["email"], merged["external_id"], merged["name"]) == ("Ada@example.com", "shop-7", "Ada")
    removed = (await client.get("/v1/customers", params={"include_removed": "true", "sort": "created_at"})).json()["items"]
    [merged_row] = [c for c in removed if c["id"] == duplicate["id"]]
    assert merged_row["merged_into_id"] == survivor["id"] and merged_row["external_id"] is None

    [announced] = await events("customer.merged")
    assert announced["data"]["survivor"]["email"] == "Ada@example.com"
    assert announced["data"]["survivor"]["external_id"] == "shop-7"
    history = (await client.get(f"/v1/customers/{survivor['id']}/history")).json()["items"]
    filled = {c["field"]: c for c in history[0]["changes"]}
    assert history[0]["via"] == "merge" and filled["email"]["to"] == "Ada@example.com"
    assert filled["external_id"] == {"field": "external_id", "from": None, "to": "shop-7"}

    # The address and the external id are the survivor's keys now.
    assert (await client.post("/v1/customers", json={"email": "ada@example.com", "name": "Other"})).status_code == 409
    by_external = await client.post("/v1/customers/batch", json={"items": [{"external_id": "shop-7", "phone": "+44 1"}]})
    assert [(x["status"], x["customer"]["id"]) for x in by_external.json()["results"]] == [("updated", survivor["id"])]
    by_email = await client.post("/v1/customers/batch", json={"items": [{"email": "ADA@example.com", "company": "AE"}]})
    assert [(x["status"], x["customer"]["id"]) for x in by_email.json()["results"]] == [("updated", survivor["id"])]
    patched = await client.patch(f"/v1/customers/{survivor['id']}", json={"external_id": "shop-7", "email": "ada@example.com"})
    assert patched.status_code == 200, patched.text
    assert (await client.get("/v1/customers", params={"external_id": "shop-7"})).json()["items"][0]["id"] == survivor["id"]


async def test_merge_keeps_the_survivors_own_keys_and_the_duplicates_external_id_names_the_survivor(
    client: httpx.AsyncClient, make: Any
) -> None:
    survivor = await make.customer(email="kept@example.com", external_id="shop-1")
    duplicate = await make.customer(email="twin@example.com", external_id="shop-2")
    r = await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})
    assert r.status_code == 200, r.text
    assert (r.json()["email"], r.json()["external_id"]) == ("kept@example.com", "shop-1")
    # The duplicate's external id stays on the merged record: an upsert by it is told where it went
    # instead of making the duplicate again.
    stale = await client.post("/v1/customers/batch", json={"items": [{"external_id": "shop-2", "name": "Twin"}]})
    [result] = stale.json()["results"]
    assert result["problem"]["status"] == 409 and f"merged into {survivor['id']}" in result["problem"]["detail"]
    found = await client.get("/v1/customers", params={"external_id": "shop-2", "include_removed": "true"})
    assert [(c["id"], c["merged_into_id"]) for c in found.json()["items"]] == [(duplicate["id"], survivor["id"])]
    # Its address is freed, as before.
    assert (await client.post("/v1/customers", json={"email": "twin@example.com", "name": "New"})).status_code == 201


async def test_get_of_a_merged_duplicate_redirects_to_the_survivor(client: httpx.AsyncClient, make: Any) -> None:
    survivor, duplicate = await make.customer(), await make.customer()
    await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})
    r = await client.get(f"/v1/customers/{duplicate['id']}")
    assert r.status_code == 308
    assert r.headers["location"] == f"/v1/customers/{survivor['id']}"
    assert r.json()["merged_into"] == survivor["id"]
    followed = await client.get(f"/v1/customers/{duplicate['id']}/view", follow_redirects=True)
    assert followed.status_code == 200 and followed.json()["customer"]["id"] == survivor["id"]
    # Writes are not redirected: they are refused and name the survivor.
    patch = await client.patch(f"/v1/customers/{duplicate['id']}", json={"name": "x"})
    assert patch.status_code == 409 and patch.json()["merged_into"] == survivor["id"]
    # Stale references in bodies resolve to the survivor.
    deal = await make.deal(duplicate["id"])
    assert deal["customer_id"] == survivor["id"]


async def test_merge_chains_stay_one_hop_and_bad_merges_are_refused(client: httpx.AsyncClient, make: Any) -> None:
    a, b, c = await make.customer(), await make.customer(), await make.customer()
    assert (await client.post(f"/v1/customers/{b['id']}/merge", json={"duplicate_id": a["id"]})).status_code == 200
    assert (await client.post(f"/v1/customers/{c['id']}/merge", json={"duplicate_id": b["id"]})).status_code == 200
    assert (await client.get(f"/v1/customers/{a['id']}")).headers["location"] == f"/v1/customers/{c['id']}"

    assert (await client.post(f"/v1/customers/{c['id']}/merge", json={"duplicate_id": c["id"]})).status_code == 422
    assert (await client.post(f"/v1/customers/{c['id']}/merge", json={"duplicate_id": str(uuid.uuid4())})).status_code == 422
    assert (await client.post(f"/v1/customers/{uuid.uuid4()}/merge", json={"duplicate_id": c["id"]})).status_code == 404
    again = await client.post(f"/v1/customers/{c['id']}/merge", json={"duplicate_id": a["id"]})
    assert again.status_code == 409 and again.json()["merged_into"] == c["id"]
    stale = await client.post(
        f"/v1/customers/{c['id']}/merge", json={"duplicate_id": (await make.customer())["id"]}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412


# --- GDPR erase ------------------------------------------------------------------------------


async def test_erase_removes_personal_data_keeps_anonymous_history_and_is_idempotent(
    client: httpx.AsyncClient, make: Any, events: Any, session_factory: Any, keys: dict[str, str]
) -> None:
    created = (
        await client.post(
            "/v1/customers",
            json={"email": "erase.me@example.com", "name": "Erase Me", "phone": "1", "company": "Co", "attributes": {"x": 1}},
            headers={"Idempotency-Key": "erase-create"},
        )
    ).json()
    cid = created["id"]
    await make.interaction(customer_id=cid, type="purchase", amount="25.00", summary="bought shoes", metadata={"size": 42})
    deal = await make.deal(cid, amount="900.00")
    await make.move(deal["id"], stage="Proposal")
    await make.task(cid, title="Call Erase Me", description="private")
    lead = await make.lead(email="erase.me.lead@example.com", name="Erase Me")
    await client.post(f"/v1/leads/{lead['id']}/convert", json={"customer_id": cid})
    upload = await client.post(
        "/v1/documents", data={"customer_id": cid}, files={"file": ("cv.pdf", b"%PDF-1.4 secret", "application/pdf")}
    )
    assert upload.status_code == 201

    assert (await client.delete(f"/v1/customers/{cid}", headers=bearer(keys["write"]))).status_code == 403
    r = await client.delete(f"/v1/customers/{cid}")
    assert r.status_code == 204
    erased = (await client.get(f"/v1/customers/{cid}")).json()
    assert erased["erased_at"] is not None
    assert [erased[f] for f in ("email", "name", "phone", "company")] == [None] * 4 and erased["attributes"] == {}

    async with session_factory() as session:
        interaction = await session.scalar(select(Interaction).where(Interaction.customer_id == uuid.UUID(cid)))
        assert interaction.summary is None and interaction.metadata_ == {} and str(interaction.amount) == "25.00"
        task = await session.scalar(select(Task).where(Task.customer_id == uuid.UUID(cid)))
        assert task.title == "[erased]" and task.description is None
        assert await session.scalar(select(func.count()).select_from(Document)) == 0
        lead_row = await session.get(Lead, uuid.UUID(lead["id"]))
        assert lead_row.email is None and lead_row.name is None
        assert await session.get(IdempotencyKey, (str(await _admin_key_id(session)), "erase-create")) is None
        assert await session.scalar(select(func.count()).select_from(Customer).where(Customer.email_normalized.is_not(None))) == 0
    history = (await client.get(f"/v1/deals/{deal['id']}/history")).json()["items"]
    assert [h["to_stage"] for h in history] == ["Qualification", "Proposal"]  # the anonymous history stays

    assert len(await events("customer.erased")) == 1
    assert (await client.delete(f"/v1/customers/{cid}")).status_code == 204
    assert len(await events("customer.erased")) == 1  # erasing again announces nothing new
    assert (await client.patch(f"/v1/customers/{cid}", json={"name": "Back"})).status_code == 409
    assert [c["id"] for c in (await client.get("/v1/customers")).json()["items"]] == []
    assert (await client.delete(f"/v1/customers/{uuid.uuid4()}")).status_code == 404


async def test_erasing_a_survivor_erases_the_duplicates_merged_into_it(client: httpx.AsyncClient, make: Any, events: Any) -> None:
    survivor, duplicate = await make.customer(), await make.customer(name="Dup Name")
    await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})
    assert (await client.delete(f"/v1/customers/{duplicate['id']}")).status_code == 409
    assert (await client.delete(f"/v1/customers/{survivor['id']}")).status_code == 204
    assert {e["data"]["customer_id"] for e in await events("customer.erased")} == {survivor["id"], duplicate["id"]}


async def _admin_key_id(session: Any) -> uuid.UUID:
    from crm.db import ApiKey

    return await session.scalar(select(ApiKey.id).where(ApiKey.name == "test-admin"))
