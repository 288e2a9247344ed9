"""The hot paths written on the plain asyncpg pool keep the rules of the ORM paths they replace:
`GET /v1/customers/{id}`, the view, and `POST /v1/interactions` (idempotency, merges, erasure,
the outbox); plus the access line and the API-key cache window."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import Column, DateTime, MetaData, Numeric, String, Table, Uuid, bindparam, event, func, select
from sqlalchemy.dialects.postgresql import JSONB

from crm.db import ApiKey, OutboxMessage
from crm.interactions.models import Interaction
from cxkit.db import utcnow
from cxkit.http.auth import ApiKeyAuth, create_api_key, hash_key
from cxkit.logs import AccessLog, configure_logging
from cxkit.pg_pool import CompiledQuery, UnnestInsert


async def _count(session_factory: Any, stmt: Any) -> int:
    async with session_factory() as session:
        return int(await session.scalar(stmt))


async def test_interaction_post_replays_its_first_answer_and_refuses_another_body(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    customer = await make.customer()
    body = {"customer_id": customer["id"], "type": "purchase", "amount": "19.90", "currency": "EUR", "metadata": {"sku": "A1"}}
    first = await client.post("/v1/interactions", json=body, headers={"Idempotency-Key": "hot-1"})
    again = await client.post("/v1/interactions", json=body, headers={"Idempotency-Key": "hot-1"})
    assert first.status_code == again.status_code == 201, first.text
    assert again.content == first.content and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"] == f"/v1/interactions/{first.json()['id']}"
    other = await client.post("/v1/interactions", json={**body, "amount": "1.00"}, headers={"Idempotency-Key": "hot-1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert await _count(session_factory, select(func.count()).select_from(Interaction)) == 1
    events = await _count(session_factory, select(func.count()).where(OutboxMessage.event_type == "interaction.recorded"))
    assert events == 1
    stored = (await client.get(first.headers["Location"])).json()
    assert stored == first.json() and stored["amount"] == "19.90" and stored["metadata"] == {"sku": "A1"}


async def test_interaction_post_announces_the_row_it_stored(client: httpx.AsyncClient, make: Any, events: Any) -> None:
    customer = await make.customer(email="hot.path@example.com")
    posted = (await client.post("/v1/interactions", json={"customer_id": customer["id"], "type": "call"})).json()
    (event,) = await events("interaction.recorded")
    assert event["subject"] == customer["id"]
    assert event["data"]["interaction_id"] == posted["id"] and event["data"]["customer_email"] == "hot.path@example.com"


async def test_interaction_for_a_merged_duplicate_lands_on_the_survivor_and_erased_is_422(
    client: httpx.AsyncClient, make: Any
) -> None:
    survivor, duplicate, erased = await make.customer(), await make.customer(), await make.customer()
    assert (await client.post(f"/v1/customers/{survivor['id']}/merge", json={"duplicate_id": duplicate["id"]})).status_code == 200
    moved = await client.post("/v1/interactions", json={"customer_id": duplicate["id"], "type": "call"})
    assert moved.status_code == 201 and moved.json()["customer_id"] == survivor["id"]
    assert (await client.delete(f"/v1/customers/{erased['id']}")).status_code in (200, 204)
    refused = await client.post("/v1/interactions", json={"customer_id": erased["id"], "type": "call"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["msg"] == "erased"
    unknown = await client.post("/v1/interactions", json={"customer_id": str(uuid.uuid4()), "type": "call"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "customer_id"]


async def test_failed_interaction_post_leaves_its_key_free(client: httpx.AsyncClient, make: Any) -> None:
    missing = {"customer_id": str(uuid.uuid4()), "type": "call"}
    assert (await client.post("/v1/interactions", json=missing, headers={"Idempotency-Key": "hot-2"})).status_code == 422
    customer = await make.customer()
    ok = await client.post(
        "/v1/interactions", json={"customer_id": customer["id"], "type": "call"}, headers={"Idempotency-Key": "x"}
    )
    assert ok.status_code == 201
    # the refused request rolled its claim back: the key works for a (new) request
    retry = await client.post(
        "/v1/interactions", json={"customer_id": customer["id"], "type": "call"}, headers={"Idempotency-Key": "hot-2"}
    )
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry.headers


async def test_get_customer_after_a_write_shows_the_write(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer(name="Before")
    changed = await client.patch(f"/v1/customers/{customer['id']}", json={"name": "After"}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200
    read = await client.get(f"/v1/customers/{customer['id']}")
    assert read.json()["name"] == "After" and read.headers["ETag"] == '"2"'


async def test_patch_replays_its_first_answer_and_two_at_once_with_one_key_change_once(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    customer = await make.customer(name="Before")
    path = f"/v1/customers/{customer['id']}"
    first = await client.patch(path, json={"name": "After"}, headers={"Idempotency-Key": "patch-1"})
    again = await client.patch(path, json={"name": "After"}, headers={"Idempotency-Key": "patch-1"})
    assert first.status_code == again.status_code == 200, first.text
    assert again.content == first.content and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["ETag"] == first.headers["ETag"] == '"2"'
    other = await client.patch(path, json={"name": "Other"}, headers={"Idempotency-Key": "patch-1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    # Two at once with a new key (and a stale-proof If-Match): one change, one answer twice.
    both = await asyncio.gather(
        *(client.patch(path, json={"company": "Co"}, headers={"Idempotency-Key": "patch-2", "If-Match": '"2"'}) for _ in range(2))
    )
    assert [r.status_code for r in both] == [200, 200] and both[0].content == both[1].content
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in both) == ["", "true"]
    assert (await client.get(path)).headers["ETag"] == '"3"'
    assert [e["data"]["changed"] for e in await events("customer.updated")] == [["name"], ["company"]]


async def test_patch_runs_five_statements_and_its_history_names_the_key(
    crm_app: Any, client: httpx.AsyncClient, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN, the row locked with the change's author noted (one statement), the UPDATE, the
    outbox row with the key's answer, COMMIT: each round trip holds one of the pool's few
    connections while the event loop serves every other request."""
    customer = await make.customer(name="Before")
    pool = crm_app.state.pg_pool
    sent: list[str] = []
    execute, execute_with_args = asyncpg.Connection.execute, asyncpg.Connection._execute

    def ours(conn: asyncpg.Connection) -> bool:  # a connection of the request pool (not the relay's, a worker's...)
        return any(holder._con is conn for holder in pool._holders)

    async def counted_execute(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> str:
        if ours(self) and not args:  # with args it goes through _execute, counted there
            sent.append(query)
        return await execute(self, query, *args, **kwargs)

    async def counted_execute_with_args(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if ours(self):
            sent.append(query)
        return await execute_with_args(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", counted_execute)
    monkeypatch.setattr(asyncpg.Connection, "_execute", counted_execute_with_args)
    changed = await client.patch(f"/v1/customers/{customer['id']}", json={"name": "After"}, headers={"Idempotency-Key": "p5"})
    monkeypatch.undo()
    assert changed.status_code == 200, changed.text
    assert len(sent) == 5, sent
    assert sent[0].startswith("BEGIN") and sent[-1].startswith("COMMIT"), sent
    assert "FOR UPDATE" in sent[1] and "set_config('crm.changed_by'" in sent[1], sent[1]
    assert sent[2].startswith("UPDATE customers"), sent[2]
    async with crm_app.state.pg_pool.acquire() as conn:
        history = await conn.fetch(
            "SELECT changed_by, via FROM customer_changes WHERE customer_id = $1 ORDER BY seq", uuid.UUID(customer["id"])
        )
    assert (history[-1]["changed_by"], history[-1]["via"]) == ("test-admin", "update")  # the client's key


async def test_patch_announces_the_open_deal_value_and_refuses_merged_and_taken(
    client: httpx.AsyncClient, make: Any, events: Any
) -> None:
    customer, other = await make.customer(), await make.customer(email="taken@example.com")
    await make.deal(customer["id"], amount="1200.50")
    changed = await client.patch(f"/v1/customers/{customer['id']}", json={"tags": ["b", "a", "b"], "email": "NEW@example.com"})
    assert changed.status_code == 200 and changed.json()["tags"] == ["a", "b"] and changed.json()["email"] == "NEW@example.com"
    event = (await events("customer.updated"))[-1]  # after the deal's own announcement
    assert event["data"]["open_deal_value"] == "1200.50" and event["data"]["changed"] == ["email", "tags"]
    assert event["data"]["version"] == changed.json()["version"]
    taken = await client.patch(f"/v1/customers/{customer['id']}", json={"email": "Taken@Example.com"})
    assert taken.status_code == 409
    assert (await client.get(f"/v1/customers/{customer['id']}")).json()["email"] == "NEW@example.com"
    assert (await client.post(f"/v1/customers/{other['id']}/merge", json={"duplicate_id": customer["id"]})).status_code == 200
    merged = await client.patch(f"/v1/customers/{customer['id']}", json={"name": "x"})
    assert merged.status_code == 409 and merged.json()["merged_into"] == other["id"]


async def test_compiled_query_renders_literals_once_and_takes_named_values(crm_app: Any) -> None:
    query = CompiledQuery(
        select(func.count())
        .select_from(Interaction)
        .where(Interaction.customer_id == bindparam("customer_id", type_=Uuid), Interaction.type.in_(["call", "email"]))
    )
    assert "$1" in query.sql and "IN" in query.sql
    async with crm_app.state.pg_pool.acquire() as conn:
        assert await query.fetchval(conn, customer_id=uuid.uuid4()) == 0
        with pytest.raises(TypeError):
            await query.fetchval(conn)


async def test_unnest_insert_casts_from_the_table_skips_conflicts_and_refuses_too_long_text(crm_app: Any) -> None:
    table = Table(
        "unnest_probe",
        MetaData(),
        Column("id", Uuid, primary_key=True),
        Column("label", String(5)),
        Column("doc", JSONB),
        Column("amount", Numeric(10, 2)),
        Column("at", DateTime(timezone=True)),
        Column("made", String(20)),
    )
    insert = UnnestInsert(table, ["id", "label", "doc", "amount"], per_batch=["at"], server={"made": "'server'"})
    a, b = uuid.uuid4(), uuid.uuid4()
    async with crm_app.state.pg_pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE unnest_probe (id uuid PRIMARY KEY, label varchar(5), doc jsonb, amount numeric(10, 2), "
            "at timestamptz, made varchar(20)) ON COMMIT DROP"
        )
        now = utcnow()
        columns = [[a, b], ["ab", None], ['{"k": [1]}', None], [Decimal("1.5"), Decimal("2")]]
        assert await insert.execute(conn, columns, now) == 2
        assert await insert.execute(conn, [[a], ["zz"], [None], [None]], now) == 0  # its id is taken: skipped
        assert await insert.execute(conn, [[], [], [], []], now) == 0
        rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM unnest_probe")}
        assert rows[a]["doc"] == {"k": [1]} and rows[a]["amount"] == Decimal("1.50") and rows[a]["label"] == "ab"
        assert rows[b]["doc"] is None and rows[a]["at"] == now and rows[b]["made"] == "server"
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await insert.execute(conn, [[uuid.uuid4()], ["toolong"], [None], [None]], now)


async def test_revoked_key_is_refused_within_the_cache_window(crm_app: Any) -> None:
    factory = crm_app.state.session_factory
    async with factory() as session:
        row, key = await create_api_key(session, ApiKey, name="short-lived", scopes=["read"])
        await session.commit()
    auth = ApiKeyAuth(factory, ApiKey, ttl_s=0.2)
    assert await auth.verify(key) is not None
    async with factory() as session:
        (await session.get(ApiKey, row.id)).revoked_at = utcnow()
        await session.commit()
    assert await auth.verify(key) is not None  # still inside the window
    await asyncio.sleep(0.25)
    assert await auth.verify(key) is None


async def test_requests_that_find_a_key_out_of_the_cache_share_one_lookup(crm_app: Any) -> None:
    """Under load every request in flight carries the same key: when its cached answer runs out,
    they wait for one query together instead of each running its own."""
    factory = crm_app.state.session_factory
    async with factory() as session:
        _, key = await create_api_key(session, ApiKey, name="busy", scopes=["read"])
        await session.commit()
    lookups: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM api_keys" in statement:
            lookups.append(statement)

    engine = factory.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        auth = ApiKeyAuth(factory, ApiKey, ttl_s=0.3)
        assert {p.name for p in await asyncio.gather(*(auth.verify(key) for _ in range(32)))} == {"busy"}
        assert len(lookups) == 1
        await asyncio.sleep(0.35)  # the answer ran out
        assert {p.name for p in await asyncio.gather(*(auth.verify(key) for _ in range(32)))} == {"busy"}
        assert len(lookups) == 2

        # A request that goes away while it waits does not take the shared lookup with it.
        await asyncio.sleep(0.35)
        leaving = asyncio.create_task(auth.verify(key))
        await asyncio.sleep(0)  # it has started the lookup
        staying = asyncio.create_task(auth.verify(key))
        await asyncio.sleep(0)
        leaving.cancel()
        assert (await staying).name == "busy" and len(lookups) == 3
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert not auth._looking_up  # nothing kept once answered

        # Different keys are looked up each for itself, and an unknown one is refused to all.
        unknown, unknown_again, known = await asyncio.gather(*(auth.verify(k) for k in ("cx_nope", "cx_nope", key)))
        assert unknown is None and unknown_again is None and known is not None and known.name == "busy"
        assert len(lookups) == 4
    finally:
        event.remove(engine, "before_cursor_execute", seen)


async def test_an_expiring_key_is_refused_from_its_expiry_whatever_the_cache(crm_app: Any) -> None:
    factory = crm_app.state.session_factory
    async with factory() as session:
        _, key = await create_api_key(
            session, ApiKey, name="expiring", scopes=["read"], expires_at=utcnow() + dt.timedelta(seconds=1)
        )
        with pytest.raises(ValueError, match="not in the future"):
            await create_api_key(session, ApiKey, name="late", scopes=["read"], expires_at=utcnow())
        await session.commit()
    auth = ApiKeyAuth(factory, ApiKey, ttl_s=60)  # answers kept a minute, but never past the expiry
    assert (await auth.verify(key)).name == "expiring"
    assert (await auth.verify_digest(hash_key(key))).name == "expiring"
    await asyncio.sleep(1.05)
    assert await auth.verify(key) is None and await auth.verify_digest(hash_key(key)) is None

    transport = httpx.ASGITransport(app=crm_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crm") as api:
        refused = await api.get("/v1/customers", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    async with factory() as session:
        _, lasting = await create_api_key(
            session, ApiKey, name="lasting", scopes=["read"], expires_at=utcnow() + dt.timedelta(days=30)
        )
        await session.commit()
    assert (await auth.verify(lasting)).name == "lasting"


async def test_a_cached_key_is_found_by_the_key_itself_and_never_by_its_digest(crm_app: Any) -> None:
    factory = crm_app.state.session_factory
    async with factory() as session:
        _, key = await create_api_key(session, ApiKey, name="cached", scopes=["read"])
        await session.commit()
    auth = ApiKeyAuth(factory, ApiKey)
    assert (await auth.verify(key)).name == "cached"
    assert (await auth.verify_digest(hash_key(key))).name == "cached"  # a dashboard session's lookup
    # Both answers are cached now; sending the digest as if it were the key must still be refused.
    assert await auth.verify(hash_key(key)) is None
    auth.clear()
    assert await auth.verify(hash_key(key)) is None


def test_access_line_is_one_json_object_per_request(tmp_path: Any) -> None:
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        log = AccessLog()
        log.configure("crm-service", json=True, enabled=True, fd=fd)
        log.emit("GET", "/v1/customers/x", 200, 0.0042, "rid-1", "0" * 32, "127.0.0.1")
        log.configure("crm-service", json=True, enabled=False, fd=fd)
        log.emit("GET", "/v1/customers/y", 200, 0.001, "rid-2", "0" * 32, None)
    finally:
        os.close(fd)
    (line,) = path.read_bytes().splitlines()
    doc = orjson.loads(line)
    assert doc["path"] == "/v1/customers/x" and doc["status"] == 200 and doc["duration_ms"] == 4.2
    assert doc["request_id"] == "rid-1" and doc["service"] == "crm-service" and doc["logger"] == "access"


def test_uvicorn_writes_no_second_access_line() -> None:
    """uvicorn logs access lines only when `uvicorn.access` has a handler somewhere up its chain."""
    import logging

    configure_logging("crm-service", level="INFO", json=True)
    access = logging.getLogger("uvicorn.access")
    assert access.handlers == [] and access.propagate is False
