"""Async SQLAlchemy engine, sessions and portable column types for PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, MetaData, Select, Table, and_, event, insert, or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on both backends (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class PortableJSON(TypeDecorator[Any]):
    """JSON that is JSONB (indexable) on PostgreSQL and JSON text on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, echo: bool = False) -> AsyncEngine:
    """Engine for either backend; SQLite gets WAL and foreign keys, PostgreSQL a sized pool."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            echo=echo,
            json_serializer=_json_serializer,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 30},
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"application_name": "cxkit", "jit": "off"}},
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_ignoring_conflicts(dialect_name: str, table: Table) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` for the session's backend."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


async def insert_new(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], returning_column: str) -> set[Any]:
    """Insert rows, skip those that already exist, and return the key values actually inserted.

    Sent as one executemany, which SQLAlchemy turns into a few multi-row statements compiled
    once (a `values([...])` statement would be compiled anew for every batch: ~4x slower)."""
    if not rows:
        return set()
    stmt = insert_ignoring_conflicts(dialect_of(session), table).returning(table.c[returning_column])
    result = await session.execute(stmt, list(rows))
    return {row[0] for row in result}


def upsert(
    session: AsyncSession,
    table: Table,
    values: dict[str, Any] | list[dict[str, Any]],
    *,
    index_elements: list[str],
    update_columns: list[str],
    only_if_newer: str | None = None,
) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE` for PostgreSQL and SQLite. With `only_if_newer`
    (a version column) an older or equal incoming row leaves the stored one alone, so a
    replayed or reordered event cannot roll a projection back."""
    dialect = dialect_of(session)
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(dialect)
    stmt = (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)).values(values)
    set_ = {c: stmt.excluded[c] for c in update_columns}
    where = table.c[only_if_newer] < stmt.excluded[only_if_newer] if only_if_newer else None
    return stmt.on_conflict_do_update(index_elements=index_elements, set_=set_, where=where)


async def lock_keys(session: AsyncSession, namespace: str, keys: Iterable[str]) -> None:
    """Serialize transactions that touch the same keys (e.g. an email address that two
    consumers both look up and write): PostgreSQL transaction-scoped advisory locks, taken in
    sorted order so two holders never deadlock. SQLite already runs one writer at a time."""
    if dialect_of(session) != "postgresql":
        return
    for key in sorted(set(keys)):
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"{namespace}:{key}"})


def newest_first(
    stmt: Select[Any],
    at: Any,
    row_id: Any,
    *,
    limit: int,
    after: tuple[dt.datetime, Any] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Select[Any]:
    """A list query newest first: the window [since, until) on `at`, keyset after the
    (at, id) of the previous page's last row, and one row more than `limit` (see trim_page)."""
    if since is not None:
        stmt = stmt.where(at >= since)
    if until is not None:
        stmt = stmt.where(at < until)
    if after is not None:
        moment, last_id = after
        stmt = stmt.where(or_(at < moment, and_(at == moment, row_id < last_id)))
    return stmt.order_by(at.desc(), row_id.desc()).limit(limit + 1)
