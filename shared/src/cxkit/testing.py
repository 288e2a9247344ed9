"""Test support both services' suites use: a PostgreSQL server (the configured one, else an
embedded one), fresh databases built by the migrations, table truncation between tests, API
keys, services as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cxkit.dev_broker import free_port
from cxkit.dev_postgres import NOT_DURABLE, DevPostgres, answers

DEFAULT_PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_dsn() -> str:
    """The admin DSN of the tests' server: CX_TEST_PG_DSN, else the local default. Read at each
    call, since start_test_postgres() may set CX_TEST_PG_DSN after this module was imported."""
    return os.environ.get("CX_TEST_PG_DSN") or DEFAULT_PG_ADMIN_DSN


def __getattr__(name: str) -> str:
    # `testing.PG_ADMIN_DSN` keeps working, and follows CX_TEST_PG_DSN.
    if name == "PG_ADMIN_DSN":
        return admin_dsn()
    raise AttributeError(name)


class EmbeddedTestPostgres:
    """The embedded server a test run started because no configured one answered: a fresh
    throwaway data directory, not durable (fsync off), removed again by stop()."""

    def __init__(self, instead_of: str) -> None:
        self.instead_of = instead_of
        self.base = Path(tempfile.mkdtemp(prefix="cx-test-pg-"))
        self.server = DevPostgres(self.base / "data", settings=NOT_DURABLE)

    def start(self) -> str:
        try:
            return self.server.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_test_postgres() -> EmbeddedTestPostgres | None:
    """Make sure the tests have a server. The configured one (CX_TEST_PG_DSN, else
    127.0.0.1:5432) is used when it answers; otherwise an embedded one is started and
    CX_TEST_PG_DSN is set to it for this process and the service processes it starts. Returns
    the embedded server, which the caller stops at the end of the run, or None."""
    configured = admin_dsn()
    if answers(configured):
        return None
    embedded = EmbeddedTestPostgres(instead_of=configured)
    os.environ["CX_TEST_PG_DSN"] = embedded.start()
    return embedded


def asyncpg_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def database_dsn(name: str) -> str:
    base, _, _ = admin_dsn().rpartition("/")
    return f"{base}/{name}"


async def create_database(prefix: str) -> str:
    """A new, empty database with a unique name; returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def migrate(alembic_ini: Path, database_url: str) -> None:
    """Build the schema with the service's Alembic migrations, in a child process (Alembic's
    env.py runs its own event loop, which cannot nest in the test loop)."""
    code = "import sys; from cxkit.migrations import upgrade; from pathlib import Path; upgrade(Path(sys.argv[1]), sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(alembic_ini), database_url], check=True)


async def truncate_all(engine: AsyncEngine, metadata: MetaData, keep: tuple[str, ...] = ("api_keys",)) -> None:
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables if t.name not in keep)
    if names:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


class ServiceProcess:
    """A service as a real uvicorn process on a free port."""

    def __init__(self, factory: str, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.factory = factory
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                self.factory,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.factory} exited early; see {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.factory} did not become healthy; see {self.log_path}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /ready says the database, the broker and the consumers are all ok."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/ready", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"{self.factory} not ready within {timeout}s: {last}")

    def stop(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_for(probe: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:  # noqa: ASYNC109
    """Await `probe()` until it returns something truthy; raise on timeout."""
    import asyncio

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def migrated_database(prefix: str, alembic_ini: Path) -> tuple[str, str]:
    """(name, async URL) of a fresh database built by the migrations."""
    name = await create_database(prefix)
    url = asyncpg_url(database_dsn(name))
    migrate(alembic_ini, url)
    return name, url


async def make_keys(session_factory: Any, model: type[Any]) -> dict[str, str]:
    """One key per scope, plus `none` (a key that was revoked)."""
    from cxkit.db import utcnow
    from cxkit.http.auth import create_api_key

    keys: dict[str, str] = {}
    async with session_factory() as session:
        for scope in ("read", "write", "admin"):
            _, keys[scope] = await create_api_key(session, model, name=f"test-{scope}", scopes=[scope])
        row, keys["revoked"] = await create_api_key(session, model, name="test-revoked", scopes=["admin"])
        row.revoked_at = utcnow()
        await session.commit()
    return keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class TcpProxy:
    """The database as the service sees it: a TCP forwarder to the real server. `cut()` drops
    every open connection and refuses new ones (the server is gone); `start()` again restores it
    on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)), asyncio.ensure_future(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pumps)
        self._tasks.difference_update(pumps)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()


class Collected(logging.Handler):
    """Every log record of WARNING or above, while attached to the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collected_logs() -> Iterator[Collected]:
    handler = Collected()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)
