"""Async SQLAlchemy engine, sessions, column types and statement builders for PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import asyncpg
import orjson
from sqlalchemy import ARRAY, ColumnElement, DateTime, MetaData, Table, any_, bindparam, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator

from cxkit.ids import new_id as new_id  # re-exported: models take their default from here
from cxkit.pg_pool import UnnestInsert, is_connection_error, is_retryable_error

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


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp (`timestamptz`): refuses naive datetimes, returns UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, echo: bool = False) -> AsyncEngine:
    """Engine for a postgresql+asyncpg URL, with a sized pool.

    No pre-ping (a round trip on every checkout): a connection the server dropped fails its
    first statement, which invalidates every older connection of the pool at once, so after a
    database restart one request fails instead of every request paying a round trip."""
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"application_name": "cxkit", "jit": "off"}},
    )


def is_database_unavailable(exc: BaseException) -> bool:
    """PostgreSQL is away or the connection to it was lost (a retry may succeed): SQLAlchemy's
    pool timeout, its wrappers of a lost connection (a `DBAPIError` that invalidated the
    connection, or that wraps a connection error), and asyncpg's own errors from the plain
    pool (see cxkit.pg_pool.is_connection_error)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pool connection free within pool_timeout
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return any(is_connection_error(e) for e in _wrapped(exc))


def is_database_busy(exc: BaseException) -> bool:
    """PostgreSQL refused the transaction for now (a deadlock's victim, a serialization failure,
    a full lock table, no memory or disk): nothing of it was kept and a retry may succeed. The
    driver's error, or SQLAlchemy's wrapper of it (see cxkit.pg_pool.is_retryable_error)."""
    return any(is_retryable_error(e) for e in _wrapped(exc))


def database_error_cause(exc: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrappers: what one log line should name
    (SQLAlchemy's own message would quote the SQL and its parameters)."""
    for inner in _wrapped(exc):
        if not type(inner).__module__.startswith("sqlalchemy"):
            return inner
    return exc


def _wrapped(exc: BaseException) -> Iterable[BaseException]:
    """`exc` and the exceptions it wraps, outermost first (a few levels at most)."""
    current: BaseException | None = exc
    for _ in range(5):
        if current is None:
            return
        yield current
        inner = current.__cause__
        if inner is None and isinstance(current, sa_exc.DBAPIError):
            inner = current.orig
        current = inner


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def equal_to_given(pairs: Iterable[tuple[Any, Any]]) -> list[ColumnElement[bool]]:
    """`column == value` for each (column, value) whose value is given (not None): a list's
    filters as WHERE conditions."""
    return [column == value for column, value in pairs if value is not None]


def window_conditions(column: Any, since: Any | None, until: Any | None) -> list[ColumnElement[bool]]:
    """`column` within [since, until) as WHERE conditions, none for an open end; each end a
    value (a time or a day) or a `bindparam`."""
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def any_of(column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """`column = ANY($1)` with the values as one array parameter: the same statement text
    whatever the number of values, so it is compiled, prepared and cached once (an `IN` list
    renders one placeholder per value, a new statement for each length)."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def insert_ignoring_conflicts(table: Table) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING`."""
    return insert(table).on_conflict_do_nothing()


def next_version(versioned: Any) -> dict[str, Any]:
    """The values a bulk `UPDATE` of versioned rows sets besides its own: the next `version`
    and `updated_at` now. A row's version is its `ETag`, which `If-Match` and `If-None-Match`
    compare: a change of any field it serves must bump it, or a client holding the old copy is
    told it is current. `versioned` is the ORM class or the table's columns (`table.c`)."""
    return {"version": versioned.version + 1, "updated_at": utcnow()}


async def detach_referrers(session: AsyncSession, table: Table, key: Any) -> None:
    """Before a row of `table` is deleted: the versioned rows pointing at it through a foreign
    key with `ON DELETE SET NULL` (a task's deal, a lead's converted deal) drop the reference
    here, with `next_version`. PostgreSQL's own `SET NULL` would change them without a new
    version, so a client holding one would be told its copy is current. Rows without a version
    (they have no `ETag`) are left to the foreign key."""
    for column in _versioned_set_null_referrers(table):
        await session.execute(
            update(column.table).where(column == key).values({column.name: None, **next_version(column.table.c)})
        )


@functools.cache
def _versioned_set_null_referrers(table: Table) -> tuple[Any, ...]:
    """The columns of versioned tables that reference `table` with `ON DELETE SET NULL`."""
    return tuple(
        fk.parent
        for referrer in table.metadata.sorted_tables
        if "version" in referrer.c and "updated_at" in referrer.c
        for fk in referrer.foreign_keys
        if fk.column.table is table and (fk.ondelete or "").upper() == "SET NULL"
    )


async def insert_new(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], returning_column: str) -> set[Any]:
    """Insert rows, skip those that already exist, and return the key values actually inserted.

    One `INSERT ... SELECT ... FROM unnest(...) ON CONFLICT DO NOTHING` (`UnnestInsert`) on the
    session's connection and transaction: its text is the same however many rows come, so it
    is prepared once per connection. (Sent as an executemany, every batch size was a multi-row
    VALUES statement of its own, and each was prepared and kept in the statement cache of every
    connection that met it: up to 100 per connection, about 7 MB for sizes 1 to 100 of a
    16-column table, on the CEM's trigger path where polls vary in size.) Every row gives the
    same columns; the table's Python-side defaults fill the columns the rows leave out, as the
    ORM would, and JSON values are sent as JSON text."""
    if not rows:
        return set()
    insert_, defaults = _insert_for(table, tuple(rows[0]))
    prepared = []
    for row in rows:
        full = dict(row)
        for name, make in defaults:
            full[name] = make()
        for name in insert_.json_columns:
            full[name] = orjson.dumps(full[name]).decode()
        prepared.append(full)
    return set(await insert_.inserted(await session_connection(session), returning_column, prepared))


_Defaults = tuple[tuple[str, Callable[[], Any]], ...]
_INSERTS: dict[tuple[str, tuple[str, ...]], tuple[UnnestInsert, _Defaults]] = {}


def _insert_for(table: Table, given: tuple[str, ...]) -> tuple[UnnestInsert, _Defaults]:
    """The statement for rows giving these columns, and a maker for each column with a
    Python-side default they leave out; built once per table and set of columns."""
    key = (table.name, given)
    found = _INSERTS.get(key)
    if found is None:
        defaults: list[tuple[str, Callable[[], Any]]] = []
        for column in table.columns:
            default = column.default
            if column.name in given or default is None:
                continue
            if default.is_scalar:
                defaults.append((column.name, lambda value=default.arg: value))
            elif default.is_callable:
                defaults.append((column.name, lambda make=default.arg: make(None)))
        statement = UnnestInsert(table, given + tuple(name for name, _ in defaults))
        found = _INSERTS[key] = (statement, tuple(defaults))
    return found


def upsert(
    table: Table,
    values: dict[str, Any] | list[dict[str, Any]],
    *,
    index_elements: list[str],
    update_columns: list[str],
    only_if_newer: str | None = None,
) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE`. With `only_if_newer` (a version column) an older or
    equal incoming row leaves the stored one alone, so a replayed or reordered event cannot
    roll a projection back."""
    stmt = insert(table).values(values)
    set_ = {c: stmt.excluded[c] for c in update_columns}
    where = table.c[only_if_newer] < stmt.excluded[only_if_newer] if only_if_newer else None
    return stmt.on_conflict_do_update(index_elements=index_elements, set_=set_, where=where)


# Volatile functions in a SELECT list are evaluated after its ORDER BY (PostgreSQL postpones
# them past the sort), so the locks are taken in the order given: the namespace's shared lock
# first (ordinality 1), then each key's in sorted order.
_LOCK_KEYS = text(
    "SELECT CASE WHEN n = 1 THEN pg_advisory_xact_lock_shared(hashtextextended(k, 0))"
    " ELSE pg_advisory_xact_lock(hashtextextended(k, 0)) END"
    " FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, n) ORDER BY n"
)
_LOCK_NAMESPACE = text("SELECT pg_advisory_xact_lock(hashtextextended(:whole, 0))")

# Past this many keys, `lock_keys` takes one lock on the whole namespace instead of one per key.
# PostgreSQL's lock table is shared by the whole server and holds about
# max_locks_per_transaction (64) x max_connections entries: a dozen transactions of a thousand
# key locks each fill it, and every transaction then fails with "out of shared memory".
LOCK_KEYS_MAX = 64
_SHARED_TAKEN = "cxkit.lock_keys.shared"


# Row locks by PostgreSQL's names (`SELECT ... FOR <mode>`). SQLAlchemy's flags read otherwise:
# `with_for_update(key_share=True)` alone is FOR NO KEY UPDATE, not FOR KEY SHARE, which made
# writes that only reference a row queue behind each other.
RowLock = Literal["update", "no key update", "share", "key share"]
_ROW_LOCK_FLAGS: dict[str, dict[str, bool]] = {
    "update": {},
    "no key update": {"key_share": True},
    "share": {"read": True},
    "key share": {"read": True, "key_share": True},
}


def locking(stmt: Any, mode: RowLock, **options: Any) -> Any:
    """`stmt` with `FOR <mode>` (`options`: `of=`, `nowait=`, `skip_locked=`). KEY SHARE: the
    lock a foreign key check takes, for a write that references the row; NO KEY UPDATE: for a
    change of the row that leaves its keys; UPDATE: for one that may change them, or delete it."""
    return stmt.with_for_update(**_ROW_LOCK_FLAGS[mode], **options)


async def lock_keys(session: AsyncSession, namespace: str, keys: Iterable[str]) -> None:
    """Serialize transactions that touch the same keys (e.g. an email address that two
    consumers both look up and write), with transaction-scoped advisory locks, in one statement.

    A few keys (up to `LOCK_KEYS_MAX`): the namespace's lock in shared mode, then one exclusive
    lock per key, in sorted order, so two holders never deadlock. More keys: the namespace's lock
    in exclusive mode alone, which waits for every holder in the namespace and keeps them all
    out until the transaction ends. The number of locks a transaction holds stays bounded
    whatever the size of the set (a batch of a thousand addresses, a consumer's poll), at the
    price of large sets running one at a time.

    A transaction that already took the shared lock never upgrades it (two of them upgrading
    would wait for each other): a later large set takes its keys one by one."""
    names = sorted({f"{namespace}:{key}" for key in keys})
    if not names:
        return
    whole = f"{namespace}/*"
    shared_in: dict[str, Any] = session.info.setdefault(_SHARED_TAKEN, {})
    transaction = session.sync_session.get_transaction()
    if len(names) > LOCK_KEYS_MAX and (transaction is None or shared_in.get(namespace) is not transaction):
        await session.execute(_LOCK_NAMESPACE, {"whole": whole})
        return
    await session.execute(_LOCK_KEYS, {"keys": [whole, *names]})
    shared_in[namespace] = session.sync_session.get_transaction()


async def session_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside the session's transaction (begun here if
    no statement has run yet), for statements sent without SQLAlchemy (a consumer's batch
    inserts, compiled hot queries): they see and commit or roll back with everything else the
    session does in that transaction."""
    connection = await session.connection()
    raw: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
    if not raw.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it runs.
        await session.execute(text("SELECT 1"))
    if not raw.is_in_transaction():  # pragma: no cover - an engine in autocommit mode
        raise RuntimeError("session_connection needs a session inside a transaction")
    return raw
