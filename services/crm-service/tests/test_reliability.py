"""Issue 9, items 1-4 on the CRM: PostgreSQL away -> 503 (both the ORM sessions and the plain
asyncpg pool of the hot paths), the JSON body cap, rate limits (in process and on Redis), and
share-link signatures kept out of the access line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from crm.config import CRMSettings
from crm.db import ApiKey
from crm.main import create_app
from cxkit import testing
from cxkit.logs import ACCESS_LOG

PROBLEM = "application/problem+json"
REDIS_URL = "redis://127.0.0.1:6379/0"
MIB = 1_048_576


@contextlib.asynccontextmanager
async def running(settings: CRMSettings) -> AsyncIterator[tuple[FastAPI, dict[str, str]]]:
    """A CRM app of its own (settings as given) with its lifespan, and API keys."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app, await testing.make_keys(app.state.session_factory, ApiKey)


def client_for(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = testing.bearer(key) if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crm", headers=headers)


async def new_customer(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.post("/v1/customers", json={"email": f"{uuid.uuid4().hex[:10]}@example.com", "name": "Reliability"})
    assert answer.status_code == 201, answer.text
    customer: dict[str, Any] = answer.json()
    return customer


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"].endswith("/" + slug), body
    return body


# --- 1. PostgreSQL away: 503 + Retry-After, one log line per failure, recovery --------------------


async def test_database_away_answers_503_with_retry_after_logs_one_line_each_and_recovers(crm_settings: CRMSettings) -> None:
    url = make_url(crm_settings.database_url)
    proxy = testing.TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    settings = crm_settings.model_copy(
        update={"database_url": url.set(port=proxy.port).render_as_string(hide_password=False), "db_pool_size": 2}
    )
    async with running(settings) as (app, keys), client_for(app, keys["admin"]) as client:
        customer = await new_customer(client)
        hot_and_orm = [
            ("GET", f"/v1/customers/{customer['id']}", None),  # asyncpg pool
            ("GET", f"/v1/customers/{customer['id']}/view", None),  # asyncpg pool
            ("POST", "/v1/interactions", {"customer_id": customer["id"], "type": "call"}),  # asyncpg pool
            ("GET", "/v1/customers?limit=5", None),  # SQLAlchemy session
        ]
        for method, path, body in hot_and_orm:
            assert (await client.request(method, path, json=body)).status_code in (200, 201)
        assert (await client.get("/ready")).status_code == 200

        with testing.collected_logs() as logs:
            await proxy.cut()
            answers = [await client.request(m, p, json=b) for _ in range(3) for m, p, b in hot_and_orm]
            # A key not in the key cache: the lookup itself (SQLAlchemy) meets the outage.
            answers.append(await client.get("/v1/customers", headers=testing.bearer("cx_" + "x" * 40)))
            ready = await client.get("/ready")

        for answer in answers:
            problem = assert_problem(answer, 503, "database-unavailable")
            assert answer.headers["retry-after"] == "5" and problem["title"] == "Service unavailable"
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unreachable")
        lines = [r for r in logs.records if r.getMessage() == "database unavailable"]
        assert len(lines) == len(answers), [r.getMessage() for r in logs.records]
        assert len(logs.records) == len(answers)  # nothing else: no pool or server error lines
        assert all(r.exc_info is None and r.levelno == logging.WARNING for r in logs.records)
        assert {r.__dict__["path"] for r in lines} >= {f"/v1/customers/{customer['id']}", "/v1/interactions"}
        assert all("[SQL:" not in r.__dict__["error"] for r in lines)

        await proxy.start()  # the database is back: the next requests succeed, nothing restarted
        for method, path, body in hot_and_orm:
            assert (await client.request(method, path, json=body)).status_code in (200, 201), (method, path)
        assert (await client.get("/ready")).status_code == 200
    await proxy.cut()


# --- 3. Body cap -----------------------------------------------------------------------------------


async def call_asgi(
    app: FastAPI, method: str, path: str, headers: dict[str, str], body: bytes, chunk: int = 64 * 1024
) -> tuple[int, bytes, int, int]:
    """One request straight through the ASGI interface, its body offered in `chunk`-sized
    messages: (status, body, chunks the app pulled, chunks offered)."""
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(parts):
            pulled += 1
            return {"type": "http.request", "body": parts[pulled - 1], "more_body": pulled < len(parts)}
        await asyncio.sleep(3600)  # a client still sending
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("crm", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), pulled, len(parts)


async def test_json_bodies_over_the_cap_get_413_without_being_read(crm_app: FastAPI, keys: dict[str, str]) -> None:
    auth = {"authorization": f"Bearer {keys['admin']}"}
    big = b'{"email": "big@example.com", "name": "' + b"x" * (2 * MIB) + b'"}'

    # Declared by Content-Length: answered before a single byte is read.
    status, body, pulled, _ = await call_asgi(
        crm_app, "POST", "/v1/customers", {**auth, "content-type": "application/json", "content-length": str(len(big))}, big
    )
    assert status == 413 and pulled == 0
    problem = orjson.loads(body)
    assert problem["type"].endswith("/payload-too-large") and "1048576" in problem["detail"]

    # Chunked (no Content-Length), 80 MiB offered: reading stops just past the cap.
    flood = b'{"name": "' + b"x" * (80 * MIB)
    status, body, pulled, offered = await call_asgi(
        crm_app, "POST", "/v1/interactions", {**auth, "content-type": "application/json"}, flood
    )
    assert status == 413 and orjson.loads(body)["type"].endswith("/payload-too-large")
    assert pulled == MIB // (64 * 1024) + 1 and offered == 1281

    # A multipart label does not lift the cap on a JSON route.
    status, body, pulled, _ = await call_asgi(
        crm_app,
        "POST",
        "/v1/customers",
        {**auth, "content-type": "multipart/form-data; boundary=x", "content-length": str(len(big))},
        big,
    )
    assert status == 413 and pulled == 17, (status, body, pulled)

    # At the cap a body is parsed as always (here: invalid, so 422, not 413).
    async with client_for(crm_app, keys["admin"]) as client:
        fits = b'{"email": "fits@example.com", "name": "' + b"x" * (MIB - 100) + b'"}'
        answer = await client.post("/v1/customers", content=fits, headers={"content-type": "application/json"})
        assert_problem(answer, 422, "validation")


async def test_uploads_keep_their_own_larger_limit(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer()
    content = b"%PDF-1.4\n" + b"0" * (3 * MIB)
    answer = await client.post(
        "/v1/documents", data={"customer_id": customer["id"]}, files={"file": ("big.pdf", content, "application/pdf")}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["size_bytes"] == len(content)


# --- 4. Rate limits ----------------------------------------------------------------------------------

FIELD = re.compile(r'^"(?P<name>[a-z-]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def rate_fields(response: httpx.Response) -> tuple[str, str, int, int]:
    """(policy field, policy name, remaining, seconds to reset) of an answer."""
    match = FIELD.match(response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return response.headers["ratelimit-policy"], match["name"], int(match["r"]), int(match["t"])


async def test_every_answer_to_a_key_carries_its_rate_limit_and_429_comes_past_it(crm_settings: CRMSettings) -> None:
    settings = crm_settings.model_copy(update={"rate_limit_per_key": "5/minute", "rate_limit_failed_auth": "3/minute"})
    async with running(settings) as (app, keys), client_for(app, keys["admin"]) as admin:
        customer = await new_customer(admin)
        answers = [
            await admin.get(f"/v1/customers/{customer['id']}"),
            await admin.get(f"/v1/customers/{uuid.uuid4()}"),  # 404
            await admin.post("/v1/customers", json={"email": "not an email"}),  # 422
            await admin.get("/v1/customers?limit=1"),
        ]
        assert [a.status_code for a in answers] == [200, 404, 422, 200]
        assert [rate_fields(a)[2] for a in answers] == [3, 2, 1, 0]  # the POST that made the customer was the first
        assert {rate_fields(a)[0] for a in answers} == {'"key";q=5;w=60'}

        limited = await admin.get("/v1/customers?limit=1")
        assert_problem(limited, 429, "rate-limited")
        _, name, remaining, reset = rate_fields(limited)
        assert (name, remaining) == ("key", 0) and 1 <= reset <= 60
        assert limited.headers["retry-after"] == str(reset)

        # Another key has its own count; its 403 carries it too.
        async with client_for(app, keys["read"]) as reader:
            forbidden = await reader.post("/v1/customers", json={"email": "r@example.com"})
            assert forbidden.status_code == 403 and rate_fields(forbidden)[2] == 4
        # Open routes carry none (no key).
        assert "ratelimit" not in (await admin.get("/health")).headers


async def test_failed_authentications_per_address_get_429_but_a_good_key_still_passes(crm_settings: CRMSettings) -> None:
    settings = crm_settings.model_copy(update={"rate_limit_failed_auth": "3/minute"})
    async with running(settings) as (app, keys), client_for(app) as anonymous:
        bad = testing.bearer("cx_" + "bad" * 14)
        refused = [await anonymous.get("/v1/customers", headers=bad) for _ in range(3)]
        for answer in refused:
            assert_problem(answer, 401, "unauthorized")
        assert [rate_fields(a)[2] for a in refused] == [2, 1, 0] and rate_fields(refused[0])[1] == "failed-auth"
        blocked = await anonymous.get("/v1/customers", headers=testing.bearer(keys["revoked"]))
        assert_problem(blocked, 429, "rate-limited")
        assert int(blocked.headers["retry-after"]) >= 1
        good = await anonymous.get("/v1/customers", headers=testing.bearer(keys["read"]))
        assert good.status_code == 200 and rate_fields(good)[1] == "key"
        assert (await anonymous.get("/v1/customers")).status_code == 401  # no key at all: nothing to guess, not counted


async def test_replicas_with_redis_storage_share_the_count_of_a_key(crm_settings: CRMSettings) -> None:
    prefix = f"cx-test-{uuid.uuid4().hex[:12]}"
    settings = crm_settings.model_copy(
        update={"rate_limit_per_key": "4/minute", "rate_limit_storage_url": REDIS_URL, "rate_limit_key_prefix": prefix}
    )
    try:
        async with (
            running(settings) as (replica_a, keys),
            running(settings) as (replica_b, _),
            client_for(replica_a, keys["read"]) as a,
            client_for(replica_b, keys["read"]) as b,
        ):
            answers = [await a.get("/v1/customers?limit=1"), await b.get("/v1/customers?limit=1")]
            answers += [await a.get("/v1/customers?limit=1"), await b.get("/v1/customers?limit=1")]
            assert [x.status_code for x in answers] == [200] * 4
            assert [rate_fields(x)[2] for x in answers] == [3, 2, 1, 0]
            assert_problem(await a.get("/v1/customers?limit=1"), 429, "rate-limited")
    finally:
        client = aioredis.Redis.from_url(REDIS_URL)
        stored = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if stored:
            await client.delete(*stored)
        await client.aclose()
    assert len(stored) == 1


# --- 2. No secrets in the access line ------------------------------------------------------------------


async def test_share_link_signature_never_reaches_the_access_line(client: httpx.AsyncClient, make: Any, tmp_path: Path) -> None:
    customer = await make.customer()
    document = (
        await client.post(
            "/v1/documents", data={"customer_id": customer["id"]}, files={"file": ("a.txt", b"hello", "text/plain")}
        )
    ).json()
    link = (await client.post(f"/v1/documents/{document['id']}/share", json={"expires_in": 600})).json()["url"]
    signature = httpx.URL(link).params["signature"]
    saved = (ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd)
    target = tmp_path / "access.jsonl"
    with target.open("w") as stream:
        ACCESS_LOG.configure("crm-service", json=True, enabled=True, fd=stream.fileno())
        try:
            url = httpx.URL(link)
            downloaded = await client.get(url.path, params=url.params, headers={"Authorization": ""})
            # The same secrets in the path, as a client might misplace them.
            await client.get(f"/v1/shared/documents/{document['id']};signature={signature}", headers={"Authorization": ""})
        finally:
            ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd = saved
    assert downloaded.status_code == 200 and downloaded.content == b"hello"
    text = target.read_text()
    assert signature not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert lines[0]["path"] == f"/v1/shared/documents/{document['id']}"
    assert lines[1]["path"] == f"/v1/shared/documents/{document['id']};signature=[redacted]"
