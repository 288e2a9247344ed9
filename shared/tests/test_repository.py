"""The repository base (`cxkit.repository`) on real PostgreSQL: what `add`, `flush`, `get`,
`delete` and `delete_by_id` send, and when."""

from __future__ import annotations

import datetime as dt
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit.repository import Repository
from cxkit.testing import statements_sent

from .conftest import Note


class NoteRepository(Repository[Note]):
    model = Note


def a_note(body: str = "first") -> Note:
    return Note(id=uuid.uuid4(), at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), body=body)


async def count_notes(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Note)) or 0)


async def stored_note(sessions: async_sessionmaker[AsyncSession], body: str = "first") -> Note:
    async with sessions() as session, session.begin():
        note = a_note(body)
        NoteRepository(session).add(note)
    return note


def sent_on(engine: AsyncEngine) -> SimpleNamespace:
    """What `statements_sent` watches: here the kit's engine rather than an app's."""
    return SimpleNamespace(state=SimpleNamespace(engine=engine))


async def test_added_row_is_written_at_the_flush(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        repo = NoteRepository(session)
        repo.add(a_note())
        assert await count_notes(session) == 0  # sessions do not autoflush
        await repo.flush()
        assert await count_notes(session) == 1


async def test_get_returns_the_row_and_a_row_the_session_holds_without_a_query(
    sessions: async_sessionmaker[AsyncSession], kit_engine: AsyncEngine
) -> None:
    note = await stored_note(sessions, "hello")
    async with sessions() as session:
        repo = NoteRepository(session)
        assert await repo.get(uuid.uuid4()) is None
        loaded = await repo.get(note.id)
        assert loaded is not None and loaded.body == "hello"
        with statements_sent(sent_on(kit_engine)) as seen:
            again = await repo.get(note.id)
        assert again is loaded
        assert seen == []


async def test_get_for_update_locks_the_row_until_the_transaction_ends(
    sessions: async_sessionmaker[AsyncSession], kit_engine: AsyncEngine
) -> None:
    note = await stored_note(sessions)
    async with sessions() as holder, holder.begin():
        with statements_sent(sent_on(kit_engine)) as seen:
            assert await NoteRepository(holder).get(note.id, for_update=True) is not None
        assert [s for s, _ in seen if "FOR UPDATE" in s]
        async with sessions() as other, other.begin():
            with pytest.raises(DBAPIError, match="could not obtain lock"):
                await other.execute(text("SELECT 1 FROM notes WHERE id = :id FOR UPDATE NOWAIT"), {"id": note.id})
    async with sessions() as other, other.begin():  # released with the holder's transaction
        await other.execute(text("SELECT 1 FROM notes WHERE id = :id FOR UPDATE NOWAIT"), {"id": note.id})


async def test_get_for_update_refreshes_a_row_the_session_loaded_before(sessions: async_sessionmaker[AsyncSession]) -> None:
    note = await stored_note(sessions, "old")
    async with sessions() as session:
        repo = NoteRepository(session)
        loaded = await repo.get(note.id)
        assert loaded is not None and loaded.body == "old"
        async with sessions() as writer, writer.begin():
            await writer.execute(update(Note).where(Note.id == note.id).values(body="new"))
        locked = await repo.get(note.id, for_update=True)  # same transaction, read committed
        assert locked is loaded
        assert locked.body == "new"


async def test_delete_goes_out_with_the_next_flush(sessions: async_sessionmaker[AsyncSession]) -> None:
    note = await stored_note(sessions)
    async with sessions() as session, session.begin():
        repo = NoteRepository(session)
        loaded = await repo.get(note.id)
        assert loaded is not None
        await repo.delete(loaded)
        assert await count_notes(session) == 1
        await repo.flush()
        assert await count_notes(session) == 0


async def test_delete_by_id_deletes_at_once_without_loading_the_row(
    sessions: async_sessionmaker[AsyncSession], kit_engine: AsyncEngine
) -> None:
    await stored_note(sessions, "kept")
    gone = await stored_note(sessions, "gone")
    async with sessions() as session, session.begin():
        with statements_sent(sent_on(kit_engine)) as seen:
            await NoteRepository(session).delete_by_id(gone.id)
        assert [s.split()[0] for s, _ in seen] == ["DELETE"]
        assert list(await session.scalars(select(Note.body))) == ["kept"]
