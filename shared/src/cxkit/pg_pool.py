"""A plain asyncpg pool beside the SQLAlchemy engine, for the hot paths.

The ORM session stays the tool for most work. A read that only turns a row into JSON, or a
write of a few rows, pays for SQLAlchemy's session, identity map, unit of work and statement
compilation for nothing: about half the time of `GET /v1/customers/{id}` and most of
`POST /v1/interactions`. Repositories run such statements on this pool; asyncpg prepares each
statement once per connection and caches it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy import ColumnElement, Select, Table, func, inspect
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.sql.elements import Label
from sqlalchemy.sql.expression import Executable

_DIALECT = asyncpg_dialect()


# The server is away (down, restarting, refusing, out of connections) or the connection to it
# was lost: the request may succeed when retried, so these answer 503, not 500.
_CONNECTION_LOST = (
    asyncpg.exceptions.PostgresConnectionError,  # connection does not exist / failed / rejected
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,  # terminated by an administrator (a fast shutdown)
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


# The server refused this transaction for now, and the same work may succeed when sent again
# (nothing of the transaction was kept): it was a deadlock's victim or failed to serialize
# (class 40), PostgreSQL ran short of a resource (class 53: its lock table, memory, disk,
# connections), or a lock could not be had in time (55P03).
_RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def is_retryable_error(exc: BaseException) -> bool:
    """The exception (as raised by asyncpg, unwrapped) is PostgreSQL refusing this transaction
    for now (a deadlock, a serialization failure, a full lock table): retrying may succeed."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    state = exc.sqlstate or ""
    return state in _RETRY_SQLSTATES or state.startswith("53")


def is_connection_error(exc: BaseException) -> bool:
    """The exception (as raised by asyncpg, unwrapped) means PostgreSQL cannot be reached now.

    A refused, reset or timed-out connect comes from asyncpg as a plain OSError / TimeoutError:
    those count only when raised inside asyncpg, so a file or HTTP error elsewhere stays a 500."""
    if isinstance(exc, asyncpg.exceptions.ProtocolViolationError):
        return False
    if isinstance(exc, _CONNECTION_LOST):
        return True
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        return "closed" in str(exc)  # "connection is closed", "pool is closed"
    if isinstance(exc, OSError):  # TimeoutError and socket.gaierror included
        return _raised_in_asyncpg(exc)
    return False


def _raised_in_asyncpg(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("asyncpg."):
            return True
        tb = tb.tb_next
    return False


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy) as the `postgresql://...` DSN asyncpg takes."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


_JSONB_VERSION = b"\x01"  # jsonb's binary form: a version byte, then the JSON text


async def _init_connection(conn: asyncpg.Connection) -> None:
    # json/jsonb come back as Python values (as through SQLAlchemy), parsed by orjson. In binary,
    # so a json value inside a row (`Nested`) or an array decodes as well as a column does.
    await conn.set_type_codec("json", schema="pg_catalog", encoder=orjson.dumps, decoder=orjson.loads, format="binary")
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: _JSONB_VERSION + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        format="binary",
    )


async def _release(conn: asyncpg.Connection) -> None:
    """On release, skip asyncpg's default reset query (advisory unlock, CLOSE ALL, UNLISTEN,
    RESET ALL: one more round trip per request). Nothing on this pool uses SET, LISTEN or
    session-level advisory locks, and its cursors (CSV exports) and SET LOCALs live inside a
    transaction; only a transaction left open is undone."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class FairPool(asyncpg.Pool):
    """An asyncpg pool whose waiters get connections in the order they asked.

    asyncpg hands out connections through an `asyncio.Queue`: a released connection wakes the
    longest waiter, but a request that asks before that waiter runs takes the connection first,
    and the waiter goes back to the end of the line. Under load (more requests in flight than
    connections) some requests were passed over again and again: the view's p50 was 10 ms and
    its p90 70 ms. Here a fair semaphore with one permit per connection queues the requests
    first (first come, first served: `asyncio.Semaphore` does not let a newcomer pass a waiter),
    so the pool's own queue never has a waiter."""

    def __init__(self, *args: Any, max_size: int, **kwargs: Any) -> None:
        super().__init__(*args, max_size=max_size, **kwargs)
        self._turns = asyncio.Semaphore(max_size)

    def acquire(self, *, timeout: float | None = None) -> _Turn:  # type: ignore[override]
        return _Turn(self, timeout)


class _Turn:
    """`async with pool.acquire() as conn`: the caller's turn, then a connection."""

    __slots__ = ("_inner", "_pool", "_timeout")

    def __init__(self, pool: FairPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._inner: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        await self._pool._turns.acquire()
        try:
            self._inner = asyncpg.Pool.acquire(self._pool, timeout=self._timeout)
            return await self._inner.__aenter__()
        except BaseException:
            self._pool._turns.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        try:
            proxy = self._inner.connection
            if _is_clean(proxy):
                # What `Pool.release` does, minus its `asyncio.shield`: that runs the release
                # as a task of its own, two turns of the event loop (3.3 ms in all under the
                # bench's POST load) while the connection is held by no one. Released clean,
                # nothing here waits, so there is nothing for a cancellation to interrupt.
                self._inner.connection = None
                self._inner.done = True
                proxy._con._on_release()
                await proxy._holder.release(proxy._holder._timeout)
            else:  # a transaction to roll back, a closed or cancelling connection: asyncpg's way
                await self._inner.__aexit__(*exc)
        finally:
            self._pool._turns.release()


def _is_clean(proxy: Any) -> bool:
    """Whether asyncpg's release of this pooled connection runs without waiting for anything:
    open, no query being cancelled, no transaction, under the pool's query limit and of its
    current generation (else asyncpg closes the connection, which waits)."""
    con = proxy._con
    holder = proxy._holder
    return (
        con is not None
        and not con.is_closed()
        and not con.is_in_transaction()
        and con._top_xact is None
        and not con._protocol._is_cancelling()
        and con._protocol.queries_count < holder._max_queries
        and holder._generation == holder._pool._generation
    )


async def create_pg_pool(database_url: str, *, max_size: int, application_name: str = "cxkit") -> asyncpg.Pool:
    """A lazily filled pool (no connection is opened until it is first used), so a service
    starts while its database is still coming up, like the SQLAlchemy engine; its requests are
    served in the order they came (`FairPool`)."""
    pool = FairPool(
        asyncpg_dsn(database_url),
        min_size=0,
        max_size=max_size,
        max_queries=50000,
        init=_init_connection,
        reset=_release,
        server_settings={"application_name": application_name, "jit": "off"},
        max_inactive_connection_lifetime=300,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    return await pool


async def fetch_one(pool: asyncpg.Pool, query: str, *args: Any) -> asyncpg.Record | None:
    async with pool.acquire() as conn:
        return await conn.fetchrow(query, *args)


class CompiledQuery:
    """A SQLAlchemy Core statement compiled once to PostgreSQL SQL with `$n` placeholders, to
    run on an asyncpg connection: the query keeps being written (and typed) with SQLAlchemy,
    without building, caching-key and compiling it again on every request.

    Values are passed by bind parameter name: `bindparam("customer_id")` in the statement,
    `await q.fetch(conn, customer_id=...)`."""

    def __init__(self, stmt: Executable) -> None:
        compiled = stmt.compile(dialect=_DIALECT)
        # Literal values (including expanding IN lists) are rendered now; the `bindparam`s
        # without a value are filled at each call.
        self._required = frozenset(name for name, bind in compiled.binds.items() if bind.required)
        expanded = compiled.construct_expanded_state(compiled.construct_params(dict.fromkeys(self._required)))
        self.sql = expanded.statement
        self._names = tuple(expanded.positiontup or ())
        self._literals = dict(expanded.parameters)

    def _args(self, params: dict[str, Any]) -> list[Any]:
        if params.keys() != self._required:
            raise TypeError(f"expected values for {sorted(self._required)}, got {sorted(params)}")
        return [params[name] if name in params else self._literals[name] for name in self._names]

    def arguments(self, **params: Any) -> list[Any]:
        """The positional values of `sql` for these parameters, to run it another way (a cursor)."""
        return self._args(params)

    async def fetch(self, conn: asyncpg.Connection, **params: Any) -> list[asyncpg.Record]:
        return await conn.fetch(self.sql, *self._args(params))

    async def fetchrow(self, conn: asyncpg.Connection, **params: Any) -> asyncpg.Record | None:
        return await conn.fetchrow(self.sql, *self._args(params))

    async def fetchval(self, conn: asyncpg.Connection, **params: Any) -> Any:
        return await conn.fetchval(self.sql, *self._args(params))

    async def explain(self, conn: asyncpg.Connection, **params: Any) -> dict[str, Any]:
        """The plan PostgreSQL chooses for these values (`EXPLAIN (FORMAT JSON)`, its top node)."""
        raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + self.sql, *self._args(params))
        plan: dict[str, Any] = (orjson.loads(raw) if isinstance(raw, str | bytes) else raw)[0]["Plan"]
        return plan


def row_columns(entity: Any, prefix: str = "") -> list[Label[Any]]:
    """Every mapped column of an ORM class, labelled with its attribute name (the Python one,
    `details` for a column named `metadata`) after `prefix`: selected on the pool, a record of
    them reads like the ORM object through `Row` (`Row(record, prefix)` for a joined entity)."""
    return [getattr(entity, attr.key).label(prefix + attr.key) for attr in inspect(entity).column_attrs]


class Nested:
    """A select's rows as one column of another statement, `ARRAY(SELECT ROW(...) ... ORDER BY
    ... LIMIT ...)` (or with `one=True` the first row, `(SELECT ROW(...) ... LIMIT 1)`), read back
    as dicts keyed by the select's labels (`row_columns`). A view made of several lists then costs
    one round trip instead of one per list, and each list is still its own index range scan in
    its own order. Values keep their types (rows come in PostgreSQL's binary form)."""

    def __init__(self, stmt: Select[Any], name: str, *, one: bool = False) -> None:
        labels = list(stmt.selected_columns)
        self.name = name
        self.names = tuple(c.key for c in labels)
        rows = stmt.with_only_columns(func.row(*(c.element if isinstance(c, Label) else c for c in labels)))
        subquery = rows.scalar_subquery()
        self.column: ColumnElement[Any] = (subquery if one else func.array(subquery)).label(name)

    def rows(self, record: asyncpg.Record) -> list[dict[str, Any]]:
        names = self.names
        return [dict(zip(names, values, strict=True)) for values in record[self.name]]

    def row(self, record: asyncpg.Record) -> dict[str, Any] | None:
        values = record[self.name]
        return None if values is None else dict(zip(self.names, values, strict=True))


class Row:
    """Attribute access (`row.kind`) over an asyncpg record, for code written against ORM
    objects; `pydantic`'s `from_attributes` reads it too. With `prefix`, `row.x` is the
    record's `prefix + "x"` (one entity's columns of a join, see `row_columns`)."""

    __slots__ = ("_prefix", "_record")

    def __init__(self, record: asyncpg.Record, prefix: str = "") -> None:
        self._record = record
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[self._prefix + name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True, slots=True)
class RowInsert:
    """One new row (column -> value) of `table`, for `insert_together`."""

    table: Table
    values: dict[str, Any]

    @property
    def shape(self) -> tuple[str, tuple[str, ...]]:
        return self.table.name, tuple(self.values)


@dataclass(frozen=True, slots=True)
class Guard:
    """A condition the rows of `insert_together` go in on, checked by the inserting statement
    itself: `sql` is a SELECT (its parameters `$1`...`$k`, given in `args`) that answers a row
    while the condition holds, typically locking the row the new ones reference (`FOR KEY
    SHARE`, the lock their foreign key check takes anyway) with the state it was read in. A
    change holding that row (`FOR UPDATE`) makes the statement wait, and under READ COMMITTED
    the locked row is read again as committed and the condition checked on it: what was read
    before the statement and changed meanwhile is seen, with no transaction round trips."""

    sql: str
    args: tuple[Any, ...]


class GuardFailed(Exception):
    """`insert_together`'s guard answered no row: nothing was inserted."""


async def insert_together(
    db: asyncpg.Pool | asyncpg.Connection,
    rows: Sequence[RowInsert],
    *,
    claim: RowInsert | None = None,
    guard: Guard | None = None,
) -> bool:
    """Insert `rows` in ONE statement (a statement is atomic by itself: no BEGIN/COMMIT round
    trips). With `claim`, that row goes first with `ON CONFLICT DO NOTHING` and the others are
    inserted only if it was: returns whether it was (always True without a claim). A concurrent
    statement claiming the same key waits until this one commits, then finds it taken. With
    `guard`, nothing goes in unless it holds when the statement runs (else `GuardFailed`)."""
    shapes = tuple(r.shape for r in rows)
    sql = _together_sql(shapes, claim.shape if claim else None, _tables(rows, claim), guard.sql if guard else None)
    args = [*(guard.args if guard else ()), *(v for r in ([claim] if claim else []) + list(rows) for v in r.values.values())]
    record = await db.fetchrow(sql, *args)
    assert record is not None
    if not record[0]:
        raise GuardFailed
    return bool(record[1])


def _tables(rows: Sequence[RowInsert], claim: RowInsert | None) -> dict[str, Table]:
    return {r.table.name: r.table for r in ([claim] if claim else []) + list(rows)}


_SQL_CACHE: dict[tuple[Any, ...], str] = {}


def _together_sql(
    shapes: tuple[tuple[str, tuple[str, ...]], ...],
    claim: tuple[str, tuple[str, ...]] | None,
    tables: dict[str, Table],
    guard: str | None = None,
) -> str:
    key = (shapes, claim, guard)
    sql = _SQL_CACHE.get(key)
    if sql is not None:
        return sql
    n = _GUARD_PARAMETER.findall(guard or "")
    n = max(map(int, n), default=0)

    def values(table: str, columns: tuple[str, ...]) -> str:
        nonlocal n
        cast = []
        for column in columns:
            n += 1
            cast.append(f"${n}::{tables[table].c[column].type.compile(dialect=_DIALECT)}")
        return ", ".join(cast)

    parts = []
    gate = ""
    if guard is not None:
        parts.append(f"guard AS ({guard})")
        gate = " WHERE EXISTS (SELECT 1 FROM guard)"
    if claim is not None:
        table, columns = claim
        parts.append(
            f"claim AS (INSERT INTO {table} ({', '.join(columns)}) SELECT {values(table, columns)}{gate} "
            "ON CONFLICT DO NOTHING RETURNING 1)"
        )
        gate = " WHERE EXISTS (SELECT 1 FROM claim)"
    for i, (table, columns) in enumerate(shapes):
        parts.append(f"w{i} AS (INSERT INTO {table} ({', '.join(columns)}) SELECT {values(table, columns)}{gate})")
    held = "EXISTS (SELECT 1 FROM guard)" if guard is not None else "true"
    result = "EXISTS (SELECT 1 FROM claim)" if claim is not None else "true"
    sql = _SQL_CACHE[key] = f"WITH {', '.join(parts)} SELECT {held}, {result}"
    return sql


_GUARD_PARAMETER = re.compile(r"\$(\d+)")


def _array_type(table: Table, column: str) -> str:
    """The type the values of `column` are sent as: the column's own, except that strings go as
    `text`, so a value too long for a `varchar(n)` is refused by the insert (an explicit cast to
    `varchar(n)` would cut it silently)."""
    sql_type = table.c[column].type.compile(dialect=_DIALECT)
    return "text" if sql_type.startswith("VARCHAR") else sql_type


class UnnestInsert:
    """`INSERT ... SELECT ... FROM unnest($1::type[], $2::type[], ...)`: a whole batch of rows in
    ONE statement, given column-wise (one list per column), built from the table's metadata so
    the casts always match the columns. JSON columns travel as text (asyncpg sends no json
    arrays) and are cast row by row. `per_batch` columns take one value for the whole batch
    (passed after the lists); `server` columns get an SQL expression (`gen_random_uuid()`).
    Rows that conflict are skipped (`ON CONFLICT DO NOTHING`), unless `on_conflict` says what
    to do instead (`(id) DO UPDATE SET name = EXCLUDED.name WHERE ...`)."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        *,
        per_batch: Sequence[str] = (),
        server: dict[str, str] | None = None,
        on_conflict: str = "DO NOTHING",
    ) -> None:
        self.columns = tuple(columns)
        server = server or {}
        arrays, picks = [], []
        json_columns = []
        for n, name in enumerate(self.columns, start=1):
            sql_type = _array_type(table, name)
            is_json = sql_type in ("JSON", "JSONB")
            if is_json:
                json_columns.append(name)
            arrays.append(f"${n}::{'text' if is_json else sql_type}[]")
            picks.append(f"u.c{n}::{sql_type}" if is_json else f"u.c{n}")
        names = list(self.columns)
        for offset, name in enumerate(per_batch, start=len(self.columns) + 1):
            names.append(name)
            picks.append(f"${offset}::{_array_type(table, name)}")
        for name, expression in server.items():
            names.append(name)
            picks.append(expression)
        self.json_columns = tuple(json_columns)  # sent as JSON text: the caller encodes them
        aliases = ", ".join(f"c{n}" for n in range(1, len(self.columns) + 1))
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {', '.join(picks)} "
            f"FROM unnest({', '.join(arrays)}) AS u({aliases}) ON CONFLICT {on_conflict}"
        )

    async def execute(self, conn: asyncpg.Connection, columns: Sequence[Sequence[Any]], *per_batch: Any) -> int:
        """Insert the rows (one sequence per column, in `columns` order); returns how many were
        inserted (conflicting rows are not counted)."""
        if not columns or not columns[0]:
            return 0
        status = await conn.execute(self.sql, *columns, *per_batch)
        return int(status.rsplit(" ", 1)[1])

    def column_lists(self, rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
        """Rows given as dicts (column -> value), as the column-wise lists `execute` takes."""
        return [[row[name] for row in rows] for name in self.columns]

    async def inserted(self, conn: asyncpg.Connection, column: str, rows: Sequence[dict[str, Any]], *per_batch: Any) -> list[Any]:
        """Insert rows given as dicts; returns `column` of each row inserted (a conflicting row
        is skipped and not returned)."""
        if not rows:
            return []
        records = await conn.fetch(f"{self.sql} RETURNING {column}", *self.column_lists(rows), *per_batch)
        return [r[0] for r in records]
