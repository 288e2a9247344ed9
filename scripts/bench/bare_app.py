"""The bare baseline: the product's hot reads and writes with nothing but Starlette, an asyncpg
pool and orjson. `uvicorn --factory scripts.bench.bare_app:create_app`, `BENCH_BARE_DSN` set.

- `GET /v1/customers/{id}`: `SELECT * FROM customers WHERE id = $1`, the row as JSON.
- `POST /v1/interactions`: the same three rows the product writes in one transaction
  (interaction, idempotency answer, outbox event), into scratch copies of those tables
  (`bench_bare_*`, made by `seed_bare_tables`) so the CRM's relay never sees them."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

POOL_SIZE = 10  # the services' default pool size
NOT_FOUND = orjson.dumps({"type": "about:blank", "title": "Not Found", "status": 404})
BAD_INPUT = orjson.dumps({"type": "about:blank", "title": "Unprocessable Content", "status": 422})

INSERT_INTERACTION = """
INSERT INTO bench_bare_interactions
    (id, customer_id, type, channel, touchpoint, occurred_at, summary, amount, currency, metadata, source, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'api', $11)
"""
INSERT_IDEMPOTENCY = """
INSERT INTO bench_bare_idempotency_keys (principal, key, request_hash, status_code, response_body, response_headers, created_at)
VALUES ('bench', $1, $2, 201, $3, '{}', $4)
"""
INSERT_OUTBOX = """
INSERT INTO bench_bare_outbox (event_id, topic, key, event_type, value, headers, created_at)
VALUES ($1, 'cx.interactions.v1', $2, 'interaction.recorded', $3, '{}', $4)
"""


async def seed_bare_tables(conn: asyncpg.Connection) -> None:
    """Scratch copies of the CRM tables the write touches: same columns, indexes and foreign key."""
    for table in ("interactions", "idempotency_keys", "outbox"):
        await conn.execute(f"DROP TABLE IF EXISTS bench_bare_{table}")
        await conn.execute(f"CREATE TABLE bench_bare_{table} (LIKE {table} INCLUDING ALL)")
    await conn.execute("ALTER TABLE bench_bare_interactions ADD FOREIGN KEY (customer_id) REFERENCES customers (id)")


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog")


def _default(value: Any) -> Any:
    return str(value)  # Decimal


async def get_customer(request: Request) -> Response:
    row = await request.app.state.pool.fetchrow("SELECT * FROM customers WHERE id = $1", request.path_params["customer_id"])
    if row is None:
        return Response(NOT_FOUND, 404, media_type="application/problem+json")
    return Response(orjson.dumps(dict(row), default=_default), media_type="application/json")


async def record_interaction(request: Request) -> Response:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
        customer_id = uuid.UUID(body["customer_id"])
        kind = str(body["type"])
        amount = Decimal(str(body["amount"])) if body.get("amount") is not None else None
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, ArithmeticError):
        return Response(BAD_INPUT, 422, media_type="application/problem+json")
    now = dt.datetime.now(dt.UTC)
    row = {
        "id": uuid.uuid4(),
        "customer_id": customer_id,
        "type": kind,
        "channel": body.get("channel"),
        "touchpoint": body.get("touchpoint"),
        "occurred_at": now,
        "summary": body.get("summary"),
        "amount": amount,
        "currency": body.get("currency"),
        "metadata": body.get("metadata") or {},
        "source": "api",
        "recorded_at": now,
    }
    answer = orjson.dumps(row, default=_default)
    key = request.headers.get("idempotency-key") or str(row["id"])
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            INSERT_INTERACTION,
            row["id"], customer_id, kind, row["channel"], row["touchpoint"], now, row["summary"],
            row["amount"], row["currency"], row["metadata"], now,
        )  # fmt: skip
        await conn.execute(INSERT_IDEMPOTENCY, key, hashlib.sha256(raw).hexdigest(), answer, now)
        await conn.execute(INSERT_OUTBOX, uuid.uuid4(), str(customer_id), answer, now)
    return Response(answer, 201, media_type="application/json")


async def health(_: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def create_app() -> Starlette:
    dsn = os.environ["BENCH_BARE_DSN"]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, init=_init)
        yield
        await app.state.pool.close()

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/customers/{customer_id:uuid}", get_customer),
            Route("/v1/interactions", record_interaction, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
