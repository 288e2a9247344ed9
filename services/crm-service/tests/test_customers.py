"""Customers over HTTP against real PostgreSQL: the contract rules of SPEC section 4."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import func, select

from crm.customers.models import Customer
from crm.db import OutboxMessage
from cxkit.testing import bearer


def customer_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"email": f"user-{uuid.uuid4().hex[:8]}@example.com", "name": "Test User"}
    body.update(overrides)
    return body


async def test_create_then_get_returns_the_customer_with_etag(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/customers", json=customer_body(name="Ada", tags=["vip", "vip", "b2b"]))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 1 and body["tags"] == ["b2b", "vip"] and body["lifecycle_stage"] == "lead"
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"/v1/customers/{body['id']}"

    got = await client.get(f"/v1/customers/{body['id']}")
    assert got.status_code == 200
    assert got.json() == body
    assert got.headers["etag"] == '"1"'


async def test_create_writes_customer_created_to_the_outbox_in_the_same_transaction(
    client: httpx.AsyncClient, session_factory
) -> None:  # type: ignore[no-untyped-def]
    created = (await client.post("/v1/customers", json=customer_body())).json()
    async with session_factory() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    assert [(r.event_type, r.key, r.topic) for r in rows] == [("customer.created", created["id"], "crm.customers.v1")]
    assert rows[0].sent_at is None


async def test_duplicate_email_is_a_conflict_case_insensitively(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/customers", json=customer_body(email="Grace@Example.com"))).status_code == 201
    dup = await client.post("/v1/customers", json=customer_body(email="grace@example.COM"))
    assert dup.status_code == 409
    assert dup.headers["content-type"] == "application/problem+json"
    assert dup.json()["status"] == 409 and "grace@example.com" in dup.json()["detail"].lower()


async def test_list_paginates_with_an_opaque_cursor_newest_first(client: httpx.AsyncClient) -> None:
    ids = [(await client.post("/v1/customers", json=customer_body())).json()["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/customers", params=params)).json()
        seen += [c["id"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


async def test_list_limit_is_bounded_and_bad_cursor_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/customers", params={"limit": 201})).status_code == 422
    assert (await client.get("/v1/customers", params={"limit": 0})).status_code == 422
    bad = await client.get("/v1/customers", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    default = (await client.get("/v1/customers")).json()
    assert default == {"items": [], "next_cursor": None}


async def test_invalid_bodies_get_422_problem_json_with_field_errors(client: httpx.AsyncClient) -> None:
    cases = [
        {"email": "not-an-email", "name": "X"},
        {"name": "missing email"},
        customer_body(lifecycle_stage="king"),
        customer_body(id=str(uuid.uuid4())),  # unknown fields are refused: nobody sets the id
        customer_body(version=7),
        customer_body(name=""),
        customer_body(tags="vip"),
    ]
    for body in cases:
        r = await client.post("/v1/customers", json=body)
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert problem["status"] == 422 and problem["errors"], problem
    not_json = await client.post("/v1/customers", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422


async def test_unknown_id_is_404_and_malformed_id_is_422(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"/v1/customers/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["title"] == "Not found"
    assert (await client.get("/v1/customers/123")).status_code == 422


async def test_auth_no_key_bad_key_revoked_key_are_401_read_key_on_write_is_403(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    no_key = await client.get("/v1/customers", headers={"Authorization": ""})
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/v1/customers", headers=bearer("cx_wrong"))).status_code == 401
    assert (await client.get("/v1/customers", headers=bearer(keys["revoked"]))).status_code == 401
    assert (await client.get("/v1/customers", headers=bearer(keys["read"]))).status_code == 200
    forbidden = await client.post("/v1/customers", json=customer_body(), headers=bearer(keys["read"]))
    assert forbidden.status_code == 403 and forbidden.headers["content-type"] == "application/problem+json"
    assert (await client.post("/v1/customers", json=customer_body(), headers=bearer(keys["write"]))).status_code == 201


async def test_the_bearer_scheme_is_read_case_insensitively_and_other_schemes_are_401(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    read = keys["read"]
    for accepted in (f"Bearer {read}", f"bearer {read}", f"BEARER   {read}  "):
        assert (await client.get("/v1/customers", headers={"Authorization": accepted})).status_code == 200, accepted
    for refused in (f"Basic {read}", f"Token {read}", read, "Bearer", "Bearer    ", f"Bearer{read}"):
        answer = await client.get("/v1/customers", headers={"Authorization": refused})
        assert answer.status_code == 401, refused
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"] == "Bearer"


async def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(
    client: httpx.AsyncClient, session_factory
) -> None:  # type: ignore[no-untyped-def]
    body = customer_body()
    first = await client.post("/v1/customers", json=body, headers={"Idempotency-Key": "abc-1"})
    again = await client.post("/v1/customers", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert again.headers["etag"] == first.headers["etag"]
    other = await client.post("/v1/customers", json=customer_body(), headers={"Idempotency-Key": "abc-1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1


async def test_concurrent_requests_with_one_idempotency_key_create_one_row(client: httpx.AsyncClient, session_factory) -> None:  # type: ignore[no-untyped-def]
    body = customer_body()
    answers = await asyncio.gather(
        *[client.post("/v1/customers", json=body, headers={"Idempotency-Key": "race-1"}) for _ in range(8)]
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


async def test_health_is_open_and_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health", headers={"Authorization": ""})).json()["status"] == "ok"
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (await client.delete("/health")).status_code == 405


async def test_ready_reports_database_and_broker(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}


async def test_a_read_with_if_none_match_naming_the_current_etag_is_304_and_any_change_makes_it_200(
    client: httpx.AsyncClient,
) -> None:
    customer = (await client.post("/v1/customers", json=customer_body(name="Kept"))).json()
    url = f"/v1/customers/{customer['id']}"
    for held in ('"1"', 'W/"1"', '"7", "1"', "*"):
        r = await client.get(url, headers={"If-None-Match": held})
        assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", '"1"'), held
    assert (await client.get(url, headers={"If-None-Match": '"2"'})).json()["name"] == "Kept"

    assert (await client.patch(url, json={"name": "Changed"})).status_code == 200
    changed = await client.get(url, headers={"If-None-Match": '"1"'})  # the held copy is stale: the new one comes
    assert (changed.status_code, changed.headers["etag"], changed.json()["name"]) == (200, '"2"', "Changed")

    assert (await client.delete(url)).status_code == 204  # an erasure is a change too
    erased = await client.get(url, headers={"If-None-Match": '"2"'})
    assert erased.status_code == 200 and erased.json()["name"] is None and erased.json()["erased_at"] is not None

    survivor = (await client.post("/v1/customers", json=customer_body())).json()
    duplicate = (await client.post("/v1/customers", json=customer_body())).json()
    assert (await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})).status_code == 200
    moved = await client.get(f"/v1/customers/{duplicate['id']}", headers={"If-None-Match": "*"}, follow_redirects=False)
    assert moved.status_code == 308  # merged away: redirected, never "not modified"
    missing = await client.get(f"/v1/customers/{uuid.uuid4()}", headers={"If-None-Match": "*"})
    assert missing.status_code == 404
