"""`cxkit.db.insert_new` on real PostgreSQL: rows that exist are skipped and not reported, the
table's defaults fill what the rows leave out, JSON arrives as JSON, and every batch size is
the same statement (prepared once per connection, not once per size)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.db import insert_new, new_id, session_connection

from .conftest import Label


async def test_rows_that_exist_are_skipped_and_only_the_new_ones_returned(sessions: async_sessionmaker[AsyncSession]) -> None:
    first, again, other = new_id(), new_id(), new_id()
    async with sessions() as session, session.begin():
        assert await insert_new(session, Label.__table__, [{"id": first, "name": "a"}], "id") == {first}
        # `again` repeats the name `a` (unique), `other` is new
        rows = [{"id": again, "name": "a"}, {"id": other, "name": "b"}]
        assert await insert_new(session, Label.__table__, rows, "id") == {other}
        assert await insert_new(session, Label.__table__, [], "id") == set()
    async with sessions() as session:
        stored = {label.name: label.id for label in (await session.scalars(select(Label))).all()}
    assert stored == {"a": first, "b": other}


async def test_defaults_fill_what_the_rows_leave_out_and_json_arrives_as_json(sessions: async_sessionmaker[AsyncSession]) -> None:
    before = dt.datetime.now(dt.UTC)
    async with sessions() as session, session.begin():
        rows = [{"id": new_id(), "name": "plain"}, {"id": new_id(), "name": "nested"}]
        await insert_new(session, Label.__table__, rows[:1], "id")
        await insert_new(session, Label.__table__, [{**rows[1], "data": {"k": [1, "two", None]}}], "id")
    async with sessions() as session:
        stored = {label.name: label for label in (await session.scalars(select(Label))).all()}
        kinds = dict((await session.execute(text("SELECT name, jsonb_typeof(data) FROM labels"))).all())
    assert stored["plain"].data == {} and stored["plain"].version == 1
    assert before <= stored["plain"].made_at <= dt.datetime.now(dt.UTC)
    assert stored["nested"].data == {"k": [1, "two", None]}
    assert kinds == {"plain": "object", "nested": "object"}


async def test_every_batch_size_is_one_prepared_statement(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        for size in (1, 2, 3, 7):
            rows = [{"id": new_id(), "name": f"s{size}-{n}"} for n in range(size)]
            assert len(await insert_new(session, Label.__table__, rows, "id")) == size
        conn = await session_connection(session)
        prepared = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO labels%'")
    assert prepared == 1
