"""Keyset pages newest first (`cxkit.keyset`: `within` a window, `apply`, `cut`), as the CEM's
lists page, on real PostgreSQL: every row exactly once, in (time, id) order, when page
boundaries fall inside runs of equal times; a last page that is exactly full says so; the
window is [since, until); a row written between two pages does not shift the next one."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit import keyset
from cxkit.http.pagination import PageParams, decode_cursor

from .conftest import Note

Sessions = async_sessionmaker[AsyncSession]
T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
NEWEST_FIRST = keyset.Sort(keyset.SortKey("at", Note.at, "datetime"), descending=True)


def minute(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


async def add_notes(sessions: Sessions, minutes: list[float]) -> list[Note]:
    """A note at each of these minutes after T0 (repeats make ties); newest first, as listed."""
    made = [Note(id=uuid.uuid4(), at=minute(m), body=f"at {m}") for m in minutes]
    async with sessions() as session, session.begin():
        session.add_all(made)
    return sorted(made, key=lambda n: (n.at, n.id), reverse=True)


async def page(
    sessions: Sessions, limit: int, cursor: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> tuple[list[Note], str | None]:
    """One page as a list endpoint makes it: the cursor as a client sends it back, decoded."""
    params = PageParams(limit=limit, cursor=decode_cursor(cursor) if cursor is not None else None)
    stmt = keyset.apply(keyset.within(select(Note), Note.at, since, until), NEWEST_FIRST, Note.id, params)
    async with sessions() as session:
        rows = list((await session.scalars(stmt)).all())
    return keyset.cut(rows, NEWEST_FIRST, params)


async def every_page(sessions: Sessions, limit: int, **window: Any) -> list[list[Note]]:
    pages: list[list[Note]] = []
    cursor: str | None = None
    while True:
        rows, cursor = await page(sessions, limit, cursor, **window)
        pages.append(rows)
        if cursor is None:
            return pages
        assert len(pages) < 50, "the pages never end"


def ids(notes: list[Note]) -> list[uuid.UUID]:
    return [n.id for n in notes]


async def test_pages_split_inside_runs_of_equal_times_lose_and_repeat_nothing(sessions: Sessions) -> None:
    # Newest first: 4, 3, 2 2 2 2, 1 1, 0 0 0. Pages of 3 end inside the run at 2 and the run at 0.
    expected = await add_notes(sessions, [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4])
    pages = await every_page(sessions, 3)
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [n.id for p in pages for n in p] == ids(expected)
    assert pages[0][-1].at == pages[1][0].at == minute(2)  # a boundary inside a tie


async def test_a_last_page_that_is_exactly_full_has_no_next_cursor(sessions: Sessions) -> None:
    expected = await add_notes(sessions, [1, 1, 2, 2, 2, 3])
    first, cursor = await page(sessions, 3)
    second, after_second = await page(sessions, 3, cursor)
    assert cursor is not None and after_second is None  # no empty third page
    assert ids(first + second) == ids(expected)
    alone, none = await page(sessions, 6)
    assert ids(alone) == ids(expected) and none is None


async def test_the_window_includes_since_and_excludes_until(sessions: Sessions) -> None:
    every = await add_notes(sessions, [0, 1, 1, 2, 2, 3])
    pages = await every_page(sessions, 2, since=minute(1), until=minute(3))
    assert [n.id for p in pages for n in p] == [n.id for n in every if minute(1) <= n.at < minute(3)]
    assert [len(p) for p in pages] == [2, 2]


async def test_rows_written_between_pages_do_not_shift_the_next_page(sessions: Sessions) -> None:
    expected = await add_notes(sessions, [0, 1, 2, 3, 4, 5])
    first, cursor = await page(sessions, 2)
    last_read = first[-1]  # the note at minute 4
    # Written meanwhile: a newer note, and two at minute 4 whose ids sort just before and just
    # after the one already read: only the one that sorts after it in the list is still ahead.
    ahead = Note(id=uuid.UUID(int=last_read.id.int - 1), at=last_read.at, body="tie, still ahead")
    behind = Note(id=uuid.UUID(int=last_read.id.int + 1), at=last_read.at, body="tie, already passed")
    async with sessions() as session, session.begin():
        session.add_all([Note(id=uuid.uuid4(), at=minute(10), body="newer"), ahead, behind])
    rest: list[Note] = []
    while cursor is not None:
        more, cursor = await page(sessions, 2, cursor)
        rest += more
    assert ids(first) == ids(expected[:2])
    assert ids(rest) == [ahead.id, *ids(expected[2:])]
