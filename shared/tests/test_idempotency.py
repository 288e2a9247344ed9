"""`Idempotency-Key` on writes (cxkit.http.idempotency), through a small app on the kit's database,
on each of its three write paths: `execute` (an ORM session), `write_rows` (one statement on
the asyncpg pool) and `write_locked` (a transaction on one pooled connection). A retry gets
the first answer and writes nothing; the key with another request is refused; two requests at
once with one key write once; an answer past its time, or a write that failed, leaves the key
free."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.responses import Response

from cxkit import testing
from cxkit.db import utcnow
from cxkit.http.auth import ApiKeyAuth
from cxkit.http.deps import PgPoolDep, SessionDep
from cxkit.http.idempotency import REPLAYED_HEADER, IdempotencyDep
from cxkit.http.problems import Conflict, install_problem_handlers
from cxkit.http.responses import JSONBytesResponse
from cxkit.pg_pool import RowInsert, create_pg_pool

from .conftest import ApiKey, IdempotencyKey, Note

Sessions = async_sessionmaker[AsyncSession]
PATHS = ["/notes", "/notes/rows", "/notes/locked"]


class NoteIn(BaseModel):
    body: str
    delay: float = 0  # seconds the write takes (to overlap two requests)


def planned(body: NoteIn) -> tuple[Response, list[RowInsert]]:
    """The answer to a new note and the row that makes it; a body of `fail` is a business error."""
    if body.body == "fail":
        raise Conflict("this note cannot be made")
    note = {"id": uuid.uuid4(), "at": utcnow(), "body": body.body}
    answer = JSONBytesResponse(
        orjson.dumps(note),
        201,
        headers={"Location": f"/notes/{note['id']}", "ETag": '"1"', "X-Not-Kept": "per request"},
    )
    return answer, [RowInsert(Note.__table__, note)]


def notes_app(sessions: Sessions, pool: asyncpg.Pool) -> FastAPI:
    app = FastAPI()
    app.state.session_factory = sessions
    app.state.pg_pool = pool
    app.state.auth = ApiKeyAuth(sessions, ApiKey, ttl_s=0)
    app.state.idempotency_model = IdempotencyKey
    install_problem_handlers(app)

    @app.post("/notes", status_code=201)
    async def through_the_session(body: NoteIn, session: SessionDep, idem: IdempotencyDep) -> Response:
        async def operation() -> Response:
            answer, rows = planned(body)
            session.add(Note(**rows[0].values))
            await session.flush()
            await asyncio.sleep(body.delay)
            return answer

        return await idem.execute(session, operation)

    @app.post("/notes/rows", status_code=201)
    async def in_one_statement(body: NoteIn, pool: PgPoolDep, idem: IdempotencyDep) -> Response:
        async def prepare(pool: asyncpg.Pool) -> tuple[Response, list[RowInsert]]:
            await asyncio.sleep(body.delay)
            return planned(body)

        return await idem.write_rows(pool, prepare)

    @app.post("/notes/locked", status_code=201)
    async def under_a_lock(body: NoteIn, pool: PgPoolDep, idem: IdempotencyDep) -> Response:
        async def prepare(conn: asyncpg.Connection) -> tuple[Response, list[RowInsert]]:
            await conn.execute("SELECT pg_advisory_xact_lock(42)")
            await asyncio.sleep(body.delay)
            return planned(body)

        return await idem.write_locked(pool, prepare)

    return app


@pytest.fixture
async def keys(sessions: Sessions) -> dict[str, str]:
    return await testing.make_keys(sessions, ApiKey)


@pytest.fixture
async def app(sessions: Sessions, kit_engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    pool = await create_pg_pool(kit_engine.url.render_as_string(hide_password=False), max_size=4)
    try:
        yield notes_app(sessions, pool)
    finally:
        await pool.close()


@pytest.fixture
async def client(app: FastAPI, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kit", headers=testing.bearer(keys["write"])) as c:
        yield c


async def notes(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Note)) or 0)


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


@pytest.mark.parametrize("path", PATHS)
async def test_a_retry_with_the_key_gets_the_first_answer_and_writes_nothing(
    client: httpx.AsyncClient, sessions: Sessions, path: str
) -> None:
    first = await client.post(path, json={"body": "hello"}, headers=keyed("k-1"))
    again = await client.post(path, json={"body": "hello"}, headers=keyed("k-1"))
    assert first.status_code == again.status_code == 201, first.text
    assert again.content == first.content
    assert again.headers[REPLAYED_HEADER] == "true" and REPLAYED_HEADER not in first.headers
    assert again.headers["location"] == first.headers["location"] and again.headers["etag"] == '"1"'
    assert again.headers["content-type"] == "application/json"
    assert "x-not-kept" not in again.headers
    assert await notes(sessions) == 1

    # Without a key every request is a write of its own.
    for _ in range(2):
        assert (await client.post(path, json={"body": "hello"})).status_code == 201
    assert await notes(sessions) == 3


@pytest.mark.parametrize("path", PATHS)
async def test_the_key_with_another_request_is_refused(client: httpx.AsyncClient, sessions: Sessions, path: str) -> None:
    assert (await client.post(path, json={"body": "hello"}, headers=keyed("k-2"))).status_code == 201
    other_body = await client.post(path, json={"body": "goodbye"}, headers=keyed("k-2"))
    other_path = await client.post(next(p for p in PATHS if p != path), json={"body": "hello"}, headers=keyed("k-2"))
    for refused in (other_body, other_path):
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "different request" in refused.json()["detail"]
    assert await notes(sessions) == 1


async def test_keys_belong_to_the_api_key_that_sent_them(
    client: httpx.AsyncClient, keys: dict[str, str], sessions: Sessions
) -> None:
    mine = await client.post("/notes", json={"body": "hello"}, headers=keyed("k-3"))
    theirs = await client.post("/notes", json={"body": "hello"}, headers={**keyed("k-3"), **testing.bearer(keys["admin"])})
    assert mine.status_code == theirs.status_code == 201
    assert REPLAYED_HEADER not in theirs.headers and theirs.json()["id"] != mine.json()["id"]
    assert await notes(sessions) == 2


@pytest.mark.parametrize("path", PATHS)
async def test_two_requests_at_once_with_one_key_write_once(client: httpx.AsyncClient, sessions: Sessions, path: str) -> None:
    answers = await asyncio.gather(
        *(client.post(path, json={"body": "hello", "delay": 0.3}, headers=keyed("k-4")) for _ in range(2))
    )
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    assert answers[0].content == answers[1].content
    assert sorted(REPLAYED_HEADER in a.headers for a in answers) == [False, True]
    assert await notes(sessions) == 1


@pytest.mark.parametrize("path", PATHS)
async def test_an_answer_past_its_time_is_not_replayed(client: httpx.AsyncClient, sessions: Sessions, path: str) -> None:
    first = await client.post(path, json={"body": "hello"}, headers=keyed("k-5"))
    async with sessions() as session, session.begin():
        await session.execute(update(IdempotencyKey).values(created_at=utcnow() - dt.timedelta(hours=25)))
    later = await client.post(path, json={"body": "hello"}, headers=keyed("k-5"))
    assert first.status_code == later.status_code == 201
    assert REPLAYED_HEADER not in later.headers and later.json()["id"] != first.json()["id"]
    assert await notes(sessions) == 2
    assert (await client.post(path, json={"body": "hello"}, headers=keyed("k-5"))).headers[REPLAYED_HEADER] == "true"


@pytest.mark.parametrize("path", PATHS)
async def test_a_write_that_failed_leaves_the_key_free(client: httpx.AsyncClient, sessions: Sessions, path: str) -> None:
    failed = await client.post(path, json={"body": "fail"}, headers=keyed("k-6"))
    assert failed.status_code == 409
    assert (await client.post(path, json={"body": "fail"}, headers=keyed("k-6"))).status_code == 409  # not a replay: run again
    fixed = await client.post(path, json={"body": "hello"}, headers=keyed("k-6"))
    assert fixed.status_code == 201 and REPLAYED_HEADER not in fixed.headers
    assert await notes(sessions) == 1
