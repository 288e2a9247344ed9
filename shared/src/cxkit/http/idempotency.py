"""`Idempotency-Key` on writes: a retried request gets the first answer; the same key with
another body is refused; two concurrent requests with one key make one change."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

import asyncpg
from fastapi import Depends, Header, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cxkit.db import utcnow
from cxkit.http.auth import Writer
from cxkit.http.problems import ProblemError, Unprocessable
from cxkit.http.responses import ReplayedResponse
from cxkit.pg_pool import Guard, GuardFailed, RowInsert, insert_together

REPLAYED_HEADER = "Idempotent-Replayed"
_KEPT_HEADERS = ("etag", "location", "content-type")
# The answer of the write; a replay is the stored body of the same route's first answer.
R = TypeVar("R", bound=Response)


@dataclass(frozen=True, slots=True)
class _StoredAnswer:
    request_hash: str
    status_code: int
    response_body: bytes
    response_headers: dict[str, str]
    created_at: dt.datetime


class _KeyTaken(Exception):
    """The Idempotency-Key was claimed by another request meanwhile (undoes the transaction)."""


class Idempotency:
    def __init__(self, model: type[Any] | None, key: str | None, principal: str, request_hash: str, ttl_hours: int = 24) -> None:
        self.model = model
        self.ttl_hours = ttl_hours
        self.key = key
        self.principal = principal
        self.request_hash = request_hash

    def _replay(self, row: Any) -> ReplayedResponse:
        if row.request_hash != self.request_hash:
            raise Unprocessable("this Idempotency-Key was already used with a different request")
        headers = dict(row.response_headers or {})
        headers[REPLAYED_HEADER] = "true"
        media_type = headers.pop("content-type", "application/json")
        return ReplayedResponse(content=row.response_body, status_code=row.status_code, headers=headers, media_type=media_type)

    async def write_rows(
        self,
        pool: asyncpg.Pool,
        prepare: Callable[[asyncpg.Connection], Awaitable[tuple[R, list[RowInsert]]]],
        *,
        guard: Callable[[list[RowInsert]], Guard] | None = None,
    ) -> R:
        """`execute` for a hot write that only adds rows, on plain asyncpg (no ORM, no
        transaction round trips). `prepare` reads what it needs and returns the answer and the
        rows; the rows and the key's stored answer then go in as ONE statement, so either all
        of them are written or, when the key was taken meanwhile, none. Same rules as
        `execute`: a retry gets the first answer, another body with the key is refused, two
        concurrent requests with one key write once. One connection serves it all: each
        acquisition is a turn in the pool's line, so a second one would double the wait under load.
        `guard(rows)`: what `prepare` read that the rows rely on, checked by the same statement
        (`cxkit.pg_pool.Guard`); when it no longer holds, nothing went in and `prepare` runs again
        (it then answers as things are now)."""
        keyed = bool(self.key) and self.model is not None
        async with pool.acquire() as conn:
            while True:
                try:
                    response, rows = await prepare(conn)
                except ProblemError:
                    stored = await self._stored(conn) if keyed else None
                    if stored is not None:  # a retry of a request that succeeded before keeps its answer
                        return cast(R, self._replay(stored))
                    raise
                condition = guard(rows) if guard is not None else None
                try:
                    if not keyed:
                        await insert_together(conn, rows, guard=condition)
                        return response
                    claim = self._claim(response)
                    while not await insert_together(conn, rows, claim=claim, guard=condition):
                        stored = await self._stored(conn)
                        if stored is not None:
                            return cast(R, self._replay(stored))
                    return response
                except GuardFailed:
                    continue  # changed since `prepare` read it: read again

    async def write_locked(
        self,
        pool: asyncpg.Pool,
        prepare: Callable[[asyncpg.Connection], Awaitable[tuple[R, list[RowInsert]]]],
    ) -> R:
        """`execute` for a hot write that reads and changes rows under a lock, on plain asyncpg:
        `prepare` runs inside a transaction on one connection (it may lock, read and update)
        and returns the answer and the rows to add; the rows and the key's stored answer go in
        as one last statement before COMMIT. The key is claimed last: a concurrent request
        with the same key is serialised by the locks `prepare` takes, and when the key turns
        out to be taken the whole transaction is undone and the first answer replayed. Same
        rules as `execute` otherwise."""
        keyed = bool(self.key) and self.model is not None
        while True:
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        response, rows = await prepare(conn)
                        if not keyed:
                            if rows:
                                await insert_together(conn, rows)
                            return response
                        if not await insert_together(conn, rows, claim=self._claim(response)):
                            raise _KeyTaken
                    return response
                except (ProblemError, _KeyTaken) as exc:
                    stored = await self._stored(conn) if keyed else None
                    if stored is not None:
                        return cast(R, self._replay(stored))
                    if isinstance(exc, ProblemError):
                        raise
                    # Taken by an answer that expired and was just deleted: run it again.

    def _claim(self, response: Response) -> RowInsert:
        assert self.model is not None
        return RowInsert(
            self.model.__table__,
            {
                "principal": self.principal,
                "key": self.key,
                "request_hash": self.request_hash,
                "status_code": response.status_code,
                "response_body": bytes(response.body),
                "response_headers": {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS},
                "created_at": utcnow(),
            },
        )

    async def _stored(self, pool: asyncpg.Pool | asyncpg.Connection) -> _StoredAnswer | None:
        """The live answer stored under the key; an expired one is deleted (the key may be
        used afresh), and None is returned."""
        table = self.model.__tablename__  # type: ignore[union-attr]
        existing = await pool.fetchrow(
            f"SELECT request_hash, status_code, response_body, response_headers, created_at FROM {table} "
            "WHERE principal = $1 AND key = $2",
            self.principal,
            self.key,
        )
        if existing is None:
            return None
        if existing["created_at"] >= utcnow() - dt.timedelta(hours=self.ttl_hours):
            return _StoredAnswer(**dict(existing))
        await pool.execute(
            f"DELETE FROM {table} WHERE principal = $1 AND key = $2 AND created_at = $3",
            self.principal,
            self.key,
            existing["created_at"],
        )
        return None

    async def execute(self, session: AsyncSession, operation: Callable[[], Awaitable[R]]) -> R:
        """Run the write and commit it (with the stored answer, if a key was sent)."""
        if not self.key or self.model is None:
            response = await operation()
            await session.commit()
            return response
        pk = (self.principal, self.key)
        existing = await session.get(self.model, pk)
        if existing is not None:
            if existing.created_at >= utcnow() - dt.timedelta(hours=self.ttl_hours):
                return cast(R, self._replay(existing))
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
            return cast(R, self._replay(existing))
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
    # The scope's path, not `request.url.path`, which builds and parses the whole URL for the
    # same path (3.4 µs against 0.24 a call; 1.5% of the py-spy samples of POST /v1/interactions).
    # They differ only in escaping `?`, `#` and `\`, which no route of ours takes.
    digest = hashlib.sha256(b"\n".join([request.method.encode(), request.scope["path"].encode(), body])).hexdigest()
    return idempotency_of(request, idempotency_key, principal, digest)


def idempotency_of(request: Request, idempotency_key: str | None, principal: Writer, request_hash: str) -> Idempotency:
    """The Idempotency of a request whose meaning `request_hash` digests (a route that streams
    its body, an upload, digests it as it reads), with the app's table and key lifetime."""
    settings = getattr(request.app.state, "settings", None)
    return Idempotency(
        getattr(request.app.state, "idempotency_model", None),
        idempotency_key,
        str(principal.key_id),
        request_hash,
        ttl_hours=getattr(settings, "idempotency_ttl_hours", 24),
    )


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
