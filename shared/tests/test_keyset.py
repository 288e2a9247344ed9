"""`cxkit.keyset` on its own: the `sort` parameter, cursors that only a next_cursor of the same
list and sort decodes (422 otherwise), and on real PostgreSQL every sort (ascending,
descending, a nullable key with its NULLs last, a unique key) paging through every row once,
through the ORM and through one statement compiled per shape on the asyncpg pool."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy import BigInteger, Column, Index, Integer, Numeric, Select, Text, Uuid, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cxkit import keyset
from cxkit.http.pagination import PageParams, decode_cursor
from cxkit.http.problems import Unprocessable
from cxkit.pg_pool import CompiledQuery, asyncpg_dsn, row_columns
from cxkit.testing import plan_nodes

Sessions = async_sessionmaker[AsyncSession]


class Base(DeclarativeBase):
    pass


class Item(Base):
    """A row of a list with a key of each sort: a nullable text, an int, a unique sequence."""

    __tablename__ = "keyset_items"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)

    __table_args__ = (Index("ix_keyset_items_name_id", "name", "id"),)


NAME = keyset.SortKey("name", Item.name, "str", nullable=True)
SCORE = keyset.SortKey("score", Item.score, "int")
SEQ = keyset.SortKey("seq", Item.seq, "int", unique=True)
KEYS = (NAME, SCORE, SEQ)


def cursor_of(values: list[Any]) -> list[Any]:
    """A cursor as `page_params` hands it over (the JSON list, decoded from base64)."""
    return decode_cursor(base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("="))


@pytest.fixture(scope="module")
async def engine(kit_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with kit_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield kit_engine
    async with kit_engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)


@pytest.fixture
async def items(engine: AsyncEngine) -> AsyncIterator[list[Item]]:
    """Twelve rows: runs of equal scores and names, and three rows without a name."""
    names = ["b", "a", None, "b", "c", "a", None, "b", "a", "c", None, "a"]
    made = [Item(id=uuid.uuid4(), name=n, score=i % 4, seq=100 - i) for i, n in enumerate(names)]
    async with make_sessions(engine)() as session, session.begin():
        session.add_all(made)
    yield made
    async with engine.begin() as conn:
        await conn.execute(Item.__table__.delete())


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


def expected(rows: list[Item], sort: keyset.Sort) -> list[uuid.UUID]:
    """The order the list promises: by the key (NULLs last either way), then by id, the same way."""
    key = sort.key.column.key
    valued = sorted((r for r in rows if getattr(r, key) is not None), key=lambda r: (getattr(r, key), r.id))
    nulls = sorted((r for r in rows if getattr(r, key) is None), key=lambda r: r.id)
    if sort.descending:
        valued.reverse()
        nulls.reverse()
    return [r.id for r in valued + nulls]


async def every_page_orm(sessions: Sessions, sort: keyset.Sort, limit: int) -> list[list[Item]]:
    pages: list[list[Item]] = []
    raw: list[Any] | None = None
    while True:
        page = PageParams(limit=limit, cursor=raw)
        async with sessions() as session:
            rows = list((await session.scalars(keyset.apply(select(Item), sort, Item.id, page))).all())
        kept, cursor = keyset.cut(rows, sort, page)
        pages.append(kept)
        if cursor is None:
            return pages
        raw = decode_cursor(cursor)
        assert len(pages) < 50, "the pages never end"


SORTS = [keyset.Sort(key, descending) for key in KEYS for descending in (False, True)]


async def every_page_fetched(sessions: Sessions, sort: keyset.Sort, limit: int, ran: list[Select[Any]]) -> list[list[Item]]:
    """Every page through `keyset.fetch`, each statement it runs kept in `ran`."""
    pages: list[list[Item]] = []
    page = PageParams(limit=limit, cursor=None)
    while True:
        async with sessions() as session:

            async def run(stmt: Select[Any]) -> list[Item]:
                ran.append(stmt)
                return list((await session.scalars(stmt)).all())

            kept, cursor = keyset.cut(await keyset.fetch(run, select(Item), sort, Item.id, page), sort, page)
        pages.append(kept)
        if cursor is None:
            return pages
        page = PageParams(limit=limit, cursor=decode_cursor(cursor))
        assert len(pages) < 50, "the pages never end"


@pytest.mark.parametrize("sort", SORTS, ids=[s.token for s in SORTS])
@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_fetch_pages_through_every_row_once_in_order_like_apply(
    engine: AsyncEngine, items: list[Item], sort: keyset.Sort, limit: int
) -> None:
    ran: list[Select[Any]] = []
    pages = await every_page_fetched(make_sessions(engine), sort, limit, ran)
    assert [r.id for p in pages for r in p] == expected(items, sort)
    by_apply = await every_page_orm(make_sessions(engine), sort, limit)
    assert [[r.id for r in p] for p in pages] == [[r.id for r in p] for p in by_apply]
    # A second statement only where the named rows end within a page and the one more row that
    # tells whether a next page exists (at most two pages: the one they end in and the one before).
    assert len(pages) <= len(ran) <= len(pages) + (2 if sort.key.nullable else 0), len(ran)


@pytest.mark.parametrize("descending", [False, True], ids=["name", "-name"])
async def test_by_a_nullable_key_each_statement_is_an_index_range_in_order(
    engine: AsyncEngine, items: list[Item], descending: bool
) -> None:
    """Every page by name, either way, reads only the rows it returns from the (name, id) index,
    forwards or backwards: the cursor is where the scan starts, not a filter over the rows before
    it (as `apply`'s one statement, `(name, id) > cursor OR name IS NULL`, must be), and nothing
    sorts every row (as `name DESC NULLS LAST` must, not being the index's order backwards)."""
    ran: list[Select[Any]] = []
    await every_page_fetched(make_sessions(engine), keyset.Sort(NAME, descending=descending), 2, ran)
    assert len(ran) == 7  # six pages, the fifth in two statements
    async with engine.connect() as conn:
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            await conn.exec_driver_sql(f"SET {setting} = off")
        for stmt in ran:
            sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            raw = (await conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)).scalar_one()
            nodes = list(plan_nodes((orjson.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]))
            [scan] = [n for n in nodes if "Scan" in n["Node Type"]]
            assert scan.get("Index Name") == "ix_keyset_items_name_id", sql
            assert not [n for n in nodes if "Sort" in n["Node Type"]], sql
            assert scan.get("Rows Removed by Filter", 0) == 0, sql
            assert scan["Actual Rows"] <= 3, sql
        await conn.rollback()


@pytest.mark.parametrize("sort", SORTS, ids=[s.token for s in SORTS])
async def test_every_sort_pages_through_every_row_once_in_order(
    engine: AsyncEngine, items: list[Item], sort: keyset.Sort
) -> None:
    pages = await every_page_orm(make_sessions(engine), sort, 5)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [r.id for p in pages for r in p] == expected(items, sort)


async def test_the_nulls_of_a_nullable_key_come_last_and_page_among_themselves(engine: AsyncEngine, items: list[Item]) -> None:
    # Pages of 2 by -name: the 9 named rows, then the 3 nameless ones; the fifth page ends
    # with the first nameless row, so the sixth starts from a cursor inside the NULLs.
    pages = await every_page_orm(make_sessions(engine), keyset.Sort(NAME, descending=True), 2)
    names = [r.name for p in pages for r in p]
    assert names[-3:] == [None, None, None] and None not in names[:-3]
    assert [r.name for r in pages[4]] == ["a", None] and [r.name for r in pages[5]] == [None, None]


@pytest.mark.parametrize("sort", SORTS, ids=[s.token for s in SORTS])
async def test_a_statement_compiled_once_per_shape_pages_like_the_orm(
    engine: AsyncEngine, items: list[Item], sort: keyset.Sort
) -> None:
    shapes: dict[keyset.CursorKind, CompiledQuery] = {}
    conn = await asyncpg.connect(asyncpg_dsn(engine.url.render_as_string(hide_password=False)))
    try:
        seen: list[uuid.UUID] = []
        page = PageParams(limit=5, cursor=None)
        while True:
            after = keyset.decode_after(sort, page)
            if after.kind not in shapes:
                shapes[after.kind] = CompiledQuery(
                    keyset.page_of(select(*row_columns(Item)), sort, Item.id, keyset.After(after.kind))
                )
            rows = await shapes[after.kind].fetch(conn, **keyset.after_params(after, page))
            kept, cursor = keyset.cut(rows, sort, page, lambda r: (r[sort.key.column.key], r["id"]))
            seen += [r["id"] for r in kept]
            if cursor is None:
                break
            page = PageParams(limit=5, cursor=decode_cursor(cursor))
    finally:
        await conn.close()
    assert seen == expected(items, sort)
    # The same text for every page of a shape: the values are all parameters.
    assert "LIMIT $" in shapes["none"].sql and "$" in shapes["value"].sql


def test_a_unique_key_is_ordered_by_itself_and_its_cursor_holds_no_id() -> None:
    sort = keyset.Sort(SEQ, descending=False)
    stmt = keyset.page_of(select(Item), sort, Item.id, keyset.After("value", 7), limit=10)
    sql = str(stmt.compile(compile_kwargs={"literal_binds": True}))
    assert "ORDER BY keyset_items.seq ASC\n LIMIT 11" in sql and "keyset_items.seq > 7" in sql
    rows = [Item(id=uuid.uuid4(), seq=n) for n in (1, 2, 3)]
    _, cursor = keyset.cut(rows, sort, PageParams(limit=2, cursor=None))
    assert cursor is not None and decode_cursor(cursor) == ["seq", 2]
    assert keyset.decode_after(sort, PageParams(limit=2, cursor=["seq", 2])) == keyset.After("value", 2)
    with pytest.raises(ValueError, match="nullable"):
        keyset.SortKey("bad", Item.name, "str", nullable=True, unique=True)


def test_sort_parameter_names_its_choices() -> None:
    assert keyset.sort_pattern(KEYS) == "^-?(name|score|seq)$"
    assert keyset.parse_sort("-score", KEYS) == keyset.Sort(SCORE, descending=True)
    assert keyset.parse_sort("name", KEYS).token == "name"
    with pytest.raises(Unprocessable, match="sort must be one of name, score, seq"):
        keyset.parse_sort("height", KEYS)


NOW = "2026-11-23T10:00:00+00:00"


@pytest.mark.parametrize(
    ("sort", "values"),
    [
        (keyset.Sort(SCORE, True), ["score", 1, str(uuid.uuid4())]),  # another sort (ascending)
        (keyset.Sort(SCORE, True), ["-name", "a", str(uuid.uuid4())]),  # another key
        (keyset.Sort(SCORE, True), ["-score", 1]),  # too short
        (keyset.Sort(SCORE, True), ["-score", 1, str(uuid.uuid4()), 4]),  # too long
        (keyset.Sort(SCORE, True), ["-score", 2**40, str(uuid.uuid4())]),  # beyond an int column
        (keyset.Sort(SCORE, True), ["-score", True, str(uuid.uuid4())]),
        (keyset.Sort(SCORE, True), ["-score", None, str(uuid.uuid4())]),  # NULL in a key that has none
        (keyset.Sort(SCORE, True), ["-score", 1, "not-a-uuid"]),
        (keyset.Sort(SCORE, True), ["-score", 1, None]),
        (keyset.Sort(NAME, False), ["name", "a\x00", str(uuid.uuid4())]),  # NUL, which text cannot hold
        (keyset.Sort(NAME, False), ["name", 5, str(uuid.uuid4())]),
        (keyset.Sort(SEQ, False), ["seq", 3, str(uuid.uuid4())]),  # a unique key's cursor has no id
        ("datetime", ["x", "2026-11-23T10:00:00", str(uuid.uuid4())]),  # a naive time
        ("datetime", ["x", "2026-13-45T10:00:00+00:00", str(uuid.uuid4())]),
        ("decimal", ["x", "NaN", str(uuid.uuid4())]),
        ("decimal", ["x", "lots", str(uuid.uuid4())]),
        ("date", ["x", NOW, str(uuid.uuid4())]),
        (keyset.Sort(SCORE, True), []),
        (keyset.Sort(SCORE, True), [["-score"], 1, str(uuid.uuid4())]),
    ],
)
def test_a_cursor_of_another_list_sort_or_kind_is_422(sort: keyset.Sort | str, values: Any) -> None:
    if isinstance(sort, str):  # a key of that kind, named x
        sort = keyset.Sort(keyset.SortKey("x", Item.name, sort, digits=(18, 2)), descending=False)  # type: ignore[arg-type]
    with pytest.raises(Unprocessable) as info:
        keyset.decode_after(sort, PageParams(limit=5, cursor=values))
    assert info.value.detail == keyset.BAD_CURSOR


AMOUNT = keyset.SortKey("amount", Column("amount", Numeric(18, 2)), "decimal", nullable=True)  # type: ignore[arg-type]


def test_a_decimal_key_takes_its_digits_from_its_numeric_column() -> None:
    assert AMOUNT.digits == (18, 2)
    assert keyset.SortKey("x", Column("x", Numeric(6, 0)), "decimal").digits == (6, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a decimal key needs its column's digits"):
        keyset.SortKey("x", Column("x", Numeric()), "decimal")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "1E+16",  # numeric(18, 2) holds less than 10^16: PostgreSQL's "numeric field overflow"
        "-10000000000000000",
        "9999999999999999.995",  # 10^16 once at cents
        "1e999999",  # more digits than the driver sends
        "1E-20000",
        "0.001",  # finer than cents: no page ends there
        2**80,
        "Infinity",
    ],
)
def test_a_decimal_cursor_value_its_column_cannot_hold_is_422(value: Any) -> None:
    with pytest.raises(Unprocessable) as info:
        keyset.decode_after(keyset.Sort(AMOUNT, True), PageParams(limit=5, cursor=["-amount", value, str(uuid.uuid4())]))
    assert info.value.detail == keyset.BAD_CURSOR


@pytest.mark.parametrize(
    ("value", "held"),
    [
        ("9999999999999999.99", "9999999999999999.99"),
        ("-9999999999999999.99", "-9999999999999999.99"),
        ("1E+1", "10.00"),
        ("0.5", "0.50"),
        ("0E-20000", "0.00"),
        (12, "12.00"),
    ],
)
def test_a_decimal_cursor_value_comes_back_at_its_columns_scale(value: Any, held: str) -> None:
    last_id = uuid.uuid4()
    after = keyset.decode_after(keyset.Sort(AMOUNT, False), PageParams(limit=5, cursor=["amount", value, str(last_id)]))
    assert after == keyset.After("value", Decimal(held), last_id) and str(after.value) == held


def test_cursor_values_come_back_as_the_column_holds_them() -> None:
    last_id = uuid.uuid4()
    sort = keyset.Sort(keyset.SortKey("at", Item.name, "datetime"), descending=True)
    after = keyset.decode_after(sort, PageParams(limit=5, cursor=cursor_of(["-at", "2026-11-23T12:00:00+02:00", str(last_id)])))
    assert after == keyset.After("value", dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC), last_id)
    null = keyset.decode_after(keyset.Sort(NAME, False), PageParams(limit=5, cursor=["name", None, str(last_id)]))
    assert null == keyset.After("null", None, last_id)
    assert keyset.after_params(null, PageParams(limit=5, cursor=None)) == {"limit": 6, "after_id": last_id}
    assert keyset.decode_after(sort, PageParams(limit=5, cursor=None)) == keyset.After("none")


def test_a_cursor_of_an_order_of_its_own_round_trips_and_refuses_others() -> None:
    kinds: tuple[keyset.Kind, ...] = ("datetime", "str", "uuid")
    rows = [(dt.datetime(2026, 11, 23, 9, i, tzinfo=dt.UTC), "interaction", uuid.uuid4()) for i in range(3)]
    kept, cursor = keyset.trim(rows, 2, kinds, lambda r: r)
    assert kept == rows[:2] and cursor is not None
    assert keyset.read_cursor(PageParams(limit=2, cursor=decode_cursor(cursor)), kinds) == rows[1]
    assert keyset.trim(rows, 3, kinds, lambda r: r) == (rows, None)
    assert keyset.read_cursor(PageParams(limit=2, cursor=None), kinds) is None
    for bad in (["x"], [NOW, "a\x00", str(uuid.uuid4())], ["2026-11-23T10:00:00", "a", str(uuid.uuid4())], [NOW, "a"]):
        with pytest.raises(Unprocessable):
            keyset.read_cursor(PageParams(limit=2, cursor=bad), kinds)


@pytest.mark.parametrize("count", [0, 1])
async def test_a_first_page_needs_no_cursor_and_an_empty_list_has_none(engine: AsyncEngine, count: int) -> None:
    async with make_sessions(engine)() as session, session.begin():
        session.add_all([Item(id=uuid.uuid4(), name="a", score=1, seq=n) for n in range(count)])
    try:
        pages = await every_page_orm(make_sessions(engine), keyset.Sort(SCORE, False), 5)
        assert [len(p) for p in pages] == [count]
    finally:
        async with engine.begin() as conn:
            await conn.execute(Item.__table__.delete())


def test_filters_become_conditions_only_for_the_values_given() -> None:
    from sqlalchemy import Column, DateTime, MetaData, String, Table, and_, true
    from sqlalchemy.dialects import postgresql

    from cxkit.db import equal_to_given, window_conditions

    t = Table("t", MetaData(), Column("a", String), Column("b", String), Column("at", DateTime(timezone=True)))

    def sql(conditions: list[Any]) -> str:
        clause = and_(true(), *conditions)
        return str(clause.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))

    assert sql(equal_to_given([(t.c.a, "x"), (t.c.b, None)])) == "t.a = 'x'"
    assert equal_to_given([(t.c.a, None)]) == [] and window_conditions(t.c.at, None, None) == []
    since, until = dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert sql(window_conditions(t.c.at, since, until)) == (
        "t.at >= '2026-11-01 00:00:00+00:00' AND t.at < '2026-12-01 00:00:00+00:00'"
    )
    assert sql(window_conditions(t.c.at, None, until)) == "t.at < '2026-12-01 00:00:00+00:00'"
