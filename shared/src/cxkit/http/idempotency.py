"""`Idempotency-Key` on writes: a retried request gets the first answer; the same key with
another body is refused; two concurrent requests with one key make one change."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cxkit.db import utcnow
from cxkit.http.auth import Writer
from cxkit.http.problems import Unprocessable

REPLAYED_HEADER = "Idempotent-Replayed"
_KEPT_HEADERS = ("etag", "location", "content-type")


@dataclass(frozen=True, slots=True)
class _StoredAnswer:
    request_hash: str
    status_code: int
    response_body: bytes
    response_headers: dict[str, str]
    created_at: dt.datetime


class Idempotency:
    def __init__(self, model: type[Any] | None, key: str | None, principal: str, request_hash: str, ttl_hours: int = 24) -> None:
        self.model = model
        self.ttl_hours = ttl_hours
        self.key = key
        self.principal = principal
        self.request_hash = request_hash

    def _replay(self, row: Any) -> Response:
        if row.request_hash != self.request_hash:
            raise Unprocessable("this Idempotency-Key was already used with a different request")
        headers = dict(row.response_headers or {})
        headers[REPLAYED_HEADER] = "true"
        media_type = headers.pop("content-type", "application/json")
        return Response(content=row.response_body, status_code=row.status_code, headers=headers, media_type=media_type)

    async def execute_on(self, pool: asyncpg.Pool, operation: Callable[[asyncpg.Connection], Awaitable[Response]]) -> Response:
        """`execute` for a hot write made with plain asyncpg statements (no ORM): the same
        rules, in one transaction on a connection of `pool` that `operation` writes with."""
        async with pool.acquire() as conn, conn.transaction():
            if not self.key or self.model is None:
                return await operation(conn)
            replay = await self._claim_on(conn)
            if replay is not None:
                return replay
            response = await operation(conn)
            await conn.execute(
                f"UPDATE {self.model.__tablename__} SET status_code = $3, response_body = $4, response_headers = $5 "
                "WHERE principal = $1 AND key = $2",
                self.principal,
                self.key,
                response.status_code,
                bytes(response.body),
                {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS},
            )
        return response

    async def _claim_on(self, conn: asyncpg.Connection) -> Response | None:
        """Claim the key (None), or the stored answer to replay. A concurrent request with the
        same key waits on the primary key until the first transaction ends."""
        table = self.model.__tablename__  # type: ignore[union-attr]
        while True:
            claimed = await conn.fetchval(
                f"INSERT INTO {table} (principal, key, request_hash, status_code, response_body, response_headers, created_at) "
                "VALUES ($1, $2, $3, 0, ''::bytea, '{}'::jsonb, $4) ON CONFLICT DO NOTHING RETURNING true",
                self.principal,
                self.key,
                self.request_hash,
                utcnow(),
            )
            if claimed:
                return None
            existing = await conn.fetchrow(
                f"SELECT request_hash, status_code, response_body, response_headers, created_at FROM {table} "
                "WHERE principal = $1 AND key = $2",
                self.principal,
                self.key,
            )
            if existing is None:  # the first attempt failed and rolled back: claim it ourselves
                continue
            if existing["created_at"] >= utcnow() - dt.timedelta(hours=self.ttl_hours):
                return self._replay(_StoredAnswer(**dict(existing)))
            # expired: the key may be used afresh
            await conn.execute(f"DELETE FROM {table} WHERE principal = $1 AND key = $2", self.principal, self.key)

    async def execute(self, session: AsyncSession, operation: Callable[[], Awaitable[Response]]) -> Response:
        """Run the write and commit it (with the stored answer, if a key was sent)."""
        if not self.key or self.model is None:
            response = await operation()
            await session.commit()
            return response
        pk = (self.principal, self.key)
        existing = await session.get(self.model, pk)
        if existing is not None:
            if existing.created_at >= utcnow() - dt.timedelta(hours=self.ttl_hours):
                return self._replay(existing)
            await session.delete(existing)  # expired: the key may be used afresh
            await session.flush()
        record = self.model(
            principal=self.principal,
            key=self.key,
            request_hash=self.request_hash,
            status_code=0,
            response_body=b"",
            response_headers={},
            created_at=utcnow(),
        )
        session.add(record)
        try:
            # Claims the key: a concurrent request with the same key waits here on the
            # unique index until this transaction ends, then replays its answer.
            await session.flush()
        except IntegrityError:
            await session.rollback()
            existing = await session.get(self.model, pk, populate_existing=True)
            if existing is None:  # the first attempt failed and rolled back: run it ourselves
                return await self.execute(session, operation)
            return self._replay(existing)
        response = await operation()
        record.status_code = response.status_code
        record.response_body = bytes(response.body)
        record.response_headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
        await session.commit()
        return response


async def idempotency(
    request: Request,
    principal: Writer,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Any unique string (e.g. a UUID). A retry with the same key and body returns the first answer.",
        ),
    ] = None,
) -> Idempotency:
    body = await request.body()
    digest = hashlib.sha256(b"\n".join([request.method.encode(), request.url.path.encode(), body])).hexdigest()
    settings = getattr(request.app.state, "settings", None)
    return Idempotency(
        getattr(request.app.state, "idempotency_model", None),
        idempotency_key,
        str(principal.key_id),
        digest,
        ttl_hours=getattr(settings, "idempotency_ttl_hours", 24),
    )


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
