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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cxkit.dev_broker import free_port, port_open, stop_process
from cxkit.dev_postgres import NOT_DURABLE, DevPostgres, answers, query

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


_SESSIONS_SQL = (
    "SELECT count(*), count(*) FILTER (WHERE state LIKE 'idle in transaction%'),"
    " count(*) FILTER (WHERE wait_event_type = 'Lock'),"
    " coalesce(extract(epoch FROM max(now() - xact_start))::int, 0)"
    " FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def machine_state(broker_bootstrap: str | None = None, redis: tuple[str, int] = ("127.0.0.1", 6379)) -> list[str]:
    """What a reader of a failed run needs to tell a sick machine from a broken test: the disk
    and memory left, the load, and whether PostgreSQL, Redis and the broker answer, with
    PostgreSQL's client sessions (all, idle in a transaction, waiting on a lock, and the oldest
    transaction's age, which shows a leaked transaction holding locks)."""
    lines = []
    for label, path in (("disk (work tree)", Path.cwd()), ("disk (temp)", Path(tempfile.gettempdir()))):
        usage = shutil.disk_usage(path)
        lines.append(f"{label}: {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB")
    with contextlib.suppress(OSError, ValueError, StopIteration):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        available = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
        lines.append(f"memory available: {available / 2**20:.1f} GiB")
    with contextlib.suppress(OSError):
        lines.append("load average: " + " ".join(f"{n:.2f}" for n in os.getloadavg()))
    try:
        result = query(admin_dsn(), _SESSIONS_SQL, timeout=5)
        if result.returncode == 0:
            total, idle_in_transaction, waiting, oldest = result.stdout.split()
            lines.append(
                f"postgres: answers; {total} client sessions, {idle_in_transaction} idle in a transaction, "
                f"{waiting} waiting on a lock, oldest transaction {oldest} s"
            )
        else:
            lines.append(f"postgres: does not answer ({result.stderr.strip() or result.returncode})")
    except (OSError, subprocess.TimeoutExpired) as exc:
        lines.append(f"postgres: does not answer ({exc})")
    lines.append(f"redis {redis[0]}:{redis[1]}: {'answers' if port_open(*redis) else 'does not answer'}")
    if broker_bootstrap is not None:
        host, _, port = broker_bootstrap.rpartition(":")
        lines.append(f"broker {broker_bootstrap}: {'answers' if port_open(host, int(port)) else 'does not answer'}")
    return lines


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
        """Launch the process and wait until it answers /health."""
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        """Launch the process without waiting for it (see `wait_healthy`): several services then
        import and start side by side."""
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

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until the launched process answers /health."""
        assert self._proc is not None, "launch() first"
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
        stop_process(proc, 15, kill=kill)


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


# --- Fault tests: writes that outlive the process they were sent to, outside events, exact counts ---


async def db_rows(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one statement on a database given by its SQLAlchemy URL (or a plain DSN), on a
    connection of its own: a fault test reads the truth straight from the database, whatever the
    services it killed or cut off are doing."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


class Tally:
    """What clients were answered: status code -> count, `"no answer"` for a request that got no
    response (connection refused or reset, timeout)."""

    def __init__(self) -> None:
        import collections

        self.counts: collections.Counter[int | str] = collections.Counter()

    def record(self, outcome: int | str) -> None:
        self.counts[outcome] += 1

    def __getitem__(self, status: int | str) -> int:
        return self.counts[status]

    def __repr__(self) -> str:
        return repr(dict(sorted(self.counts.items(), key=str)))


async def write_until_acknowledged(
    clients: list[httpx.AsyncClient],
    method: str,
    path: str,
    body: dict[str, Any],
    tally: Tally,
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    retry_statuses: tuple[int, ...] = (502, 503, 504),
) -> dict[str, Any]:
    """Send one write as a careful client does: with one `Idempotency-Key` for all its attempts,
    again (on the next client, i.e. the next process of the service) after no answer or a
    503, until it is acknowledged (2xx). Every attempt's outcome goes to `tally`; any other
    status fails at once (a 500 is never retried)."""
    key = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        client = clients[attempt % len(clients)]
        attempt += 1
        try:
            answer = await client.request(method, path, json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            tally.record("no answer")
        else:
            tally.record(answer.status_code)
            if answer.is_success:
                result: dict[str, Any] = answer.json()
                return result
            if answer.status_code not in retry_statuses:
                raise AssertionError(f"{method} {path} answered {answer.status_code}: {answer.text[:500]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{method} {path} not acknowledged within {timeout}s ({tally})")
        await asyncio.sleep(min(0.05 * attempt, 0.5))


def outside_interaction(customer_id: uuid.UUID | str, summary: str, *, source: str = "urn:test:pos") -> tuple[bytes, bytes]:
    """(key, value) of an `interaction.recorded` CloudEvent as an outside system writes it by
    hand (none of this project's code): keyed by the customer id, with a fresh event id."""
    import orjson

    value = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": "interaction.recorded",
        "subject": str(customer_id),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "datacontenttype": "application/json",
        "data": {
            "customer_id": str(customer_id),
            "type": "purchase",
            "channel": "store",
            "touchpoint": "checkout",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "summary": summary,
            "amount": 10,
            "currency": "EUR",
        },
    }
    return str(customer_id).encode(), orjson.dumps(value)


class OutsidePublisher:
    """An outside system publishing onto one topic with a plain aiokafka producer (acks=all, not
    idempotent: the dev broker refuses that). `publish` retries a message until the broker
    acknowledged it, reconnecting as needed, so a broker outage delays it and never drops it;
    a retry after a lost acknowledgement may publish it twice (consumers must cope)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.acked = 0
        self.failed_attempts = 0
        self._producer: Any = None

    async def _connected(self) -> Any:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", request_timeout_ms=5000)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def publish(self, key: bytes, value: bytes, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        headers = [("content-type", b"application/cloudevents+json")]
        deadline = time.monotonic() + timeout
        while True:
            try:
                producer = await self._connected()
                await producer.send_and_wait(self.topic, value=value, key=key, headers=headers)
                self.acked += 1
                return
            except Exception:
                self.failed_attempts += 1
                await self.close()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


def metric_total(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter or gauge over the series whose labels include `labels`
    (from a /metrics answer)."""
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in metrics_text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def marked(counts: dict[str, int], expected: set[str]) -> dict[str, int]:
    """Lost / doubled / unexpected among rows counted per marker (e.g. per interaction summary):
    `counts` maps each marker found to its number of rows, `expected` holds the markers of every
    acknowledged write or published event."""
    return {
        "lost": len(expected - counts.keys()),
        "doubled": sum(n - 1 for n in counts.values() if n > 1),
        "unexpected": len(counts.keys() - expected),
    }


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextlib.contextmanager
def live_server(app: Any, port: int | None = None) -> Iterator[str]:
    """The app served by uvicorn on a real port (a free one unless given) in a thread, with its
    lifespan; yields its base URL."""
    import threading

    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextlib.contextmanager
def chromium(profile_dir: Path, *, javascript: bool = True, window: str = "1280,900", offline: bool = False) -> Iterator[Any]:
    """Debian's headless Chromium driven by chromedriver (selenium); `offline`: every address
    but loopback is unreachable (a proxy that answers nothing, loopback bypassing it), as on
    a network without internet. Skips the test when Chromium is not installed."""
    import pytest

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); `make test` installs them")
    from selenium import webdriver

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile_dir}",
        f"--window-size={window}",
    ]
    if offline:
        flags += [f"--proxy-server=http://127.0.0.1:{free_port()}", "--proxy-bypass-list=127.0.0.1"]
    for flag in flags:
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


class BrokerBehindProxy:
    """The dev broker as clients reach it: through a `TcpProxy`, which the broker advertises as
    its address. `cut()` makes it unreachable (every connection dropped, new ones refused) while
    it keeps what it holds, as an Apache Kafka broker that restarts (or a network partition)
    would; `restore()` brings it back on the same address. `restart_empty()` restarts the dev
    broker process itself, which then holds nothing (memory only)."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.listen_port = free_port()
        self.proxy = TcpProxy("127.0.0.1", self.listen_port)
        self.proxy.port = free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def _run_broker(self) -> None:
        from cxkit.dev_broker import broker_binary, port_open

        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the child writes to it
        self._proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.listen_port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.proxy.port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        if log is not subprocess.DEVNULL:
            log.close()
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", self.listen_port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dev broker did not listen on {self.listen_port}")
            time.sleep(0.05)

    def _stop_broker(self) -> None:
        from cxkit.dev_broker import port_open

        proc, self._proc = self._proc, None
        stop_process(proc)
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", self.listen_port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    async def start(self) -> None:
        await asyncio.to_thread(self._run_broker)
        await self.proxy.start()

    async def cut(self) -> None:
        await self.proxy.cut()

    async def restore(self) -> None:
        await self.proxy.start()

    async def restart_empty(self) -> None:
        await asyncio.to_thread(self._stop_broker)
        await asyncio.to_thread(self._run_broker)

    async def stop(self) -> None:
        if self.proxy._server is not None and self.proxy._server.is_serving():
            await self.proxy.cut()
        await asyncio.to_thread(self._stop_broker)


async def clone_database(template: str, prefix: str) -> tuple[str, str]:
    """(name, async URL) of a new database copied from `template` (a database nobody is
    connected to, e.g. one built once by the migrations): much faster than migrating again."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name, asyncpg_url(database_dsn(name))


async def settles(probe: Any, timeout: float = 10.0, interval: float = 0.2) -> bool:  # noqa: ASYNC109
    """Like `wait_for`, but answers False on timeout instead of raising: a fault test then goes on
    to count (and report) exactly what is missing before it fails."""
    try:
        await wait_for(probe, timeout=timeout, interval=interval)
    except AssertionError:
        return False
    return True


@contextlib.contextmanager
def statements_sent(app: Any) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Every SQL statement (with its parameters) the app sends while the block runs: through
    its SQLAlchemy engine, and as `CompiledQuery` statements on its asyncpg pool. For checking
    the plans of the very statements a request runs."""
    from sqlalchemy import event

    from cxkit.pg_pool import CompiledQuery

    seen: list[tuple[str, tuple[Any, ...]]] = []

    def on_engine(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, tuple(parameters or ())))

    compiled_args = CompiledQuery._args

    def on_pool(query: CompiledQuery, params: dict[str, Any]) -> list[Any]:
        args = compiled_args(query, params)
        seen.append((query.sql, tuple(args)))
        return args

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_engine)
    CompiledQuery._args = on_pool  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_engine)
        CompiledQuery._args = compiled_args  # type: ignore[method-assign]


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an `EXPLAIN (FORMAT JSON)` plan, the top one first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def stream_get(
    app: Any, path: str, headers: dict[str, str], on_chunk: Any, *, disconnect_after: int | None = None
) -> tuple[int, dict[str, str]]:
    """GET `path` from the ASGI `app` in-process, handing each body part to `on_chunk(bytes)` as
    it is sent and keeping none of it (httpx's ASGITransport collects the whole body before
    answering, so it cannot show that a response streams). With `disconnect_after`, the client
    goes away after that many body parts. Returns the status and the headers."""
    target, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    gone = asyncio.Event()
    requested = False
    status, answer_headers, parts = 0, {}, 0

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, answer_headers, parts
        if message["type"] == "http.response.start":
            status = message["status"]
            answer_headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            if gone.is_set():
                raise OSError("client gone")
            if message.get("body"):
                on_chunk(message["body"])
                parts += 1
                if disconnect_after is not None and parts >= disconnect_after:
                    gone.set()
                    await asyncio.sleep(0)  # the disconnect is noticed while the app streams on
            if not message.get("more_body", False):
                gone.set()

    await app(scope, receive, send)
    return status, answer_headers


def resident_bytes() -> int:
    """The process's resident memory now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class StreamedBody:
    """What `stream_measured` saw: the status, the body's size, its parts and CRLF line ends,
    and how far the process's resident memory rose above where it started while they came."""

    status: int = 0
    size: int = 0
    parts: int = 0
    line_ends: int = 0
    growth_bytes: int = 0


async def stream_measured(app: Any, path: str, headers: dict[str, str]) -> StreamedBody:
    """GET `path` through `stream_get`, keeping nothing of the body but counts, and the
    resident memory read at every part received."""
    seen = StreamedBody()
    before = resident_bytes()

    def consume(chunk: bytes) -> None:
        seen.size += len(chunk)
        seen.parts += 1
        seen.line_ends += chunk.count(b"\r\n")
        seen.growth_bytes = max(seen.growth_bytes, resident_bytes() - before)

    seen.status, _ = await stream_get(app, path, headers, consume)
    return seen


async def key_without_read_scope(session_factory: Any, model: type[Any]) -> str:
    """A stored key whose scopes reach none the service knows (so not even `read`): the way to
    see a read route answer 403."""
    from cxkit.db import utcnow
    from cxkit.http.auth import hash_key

    plaintext = f"cx_{uuid.uuid4().hex}"
    async with session_factory() as session:
        session.add(model(name="no-scope", prefix=plaintext[:10], key_hash=hash_key(plaintext), scopes=[], created_at=utcnow()))
        await session.commit()
    return plaintext


async def every_item(client: httpx.AsyncClient, path: str, *, limit: int = 2, **params: Any) -> list[dict[str, Any]]:
    """Every item a paged list at `path` shows with `params`, following `next_cursor` from page
    to page (`limit` items a page: small, so the paging is exercised)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await client.get(path, params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        if not (cursor := r.json()["next_cursor"]):
            return items


def csv_records(response: httpx.Response, header: list[str]) -> list[dict[str, str]]:
    """A CSV answer's lines after its header (which must be `header`), as dicts."""
    import csv
    import io

    assert response.status_code == 200, response.text
    lines = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert lines[0] == header, lines[0]
    return [dict(zip(header, line, strict=True)) for line in lines[1:]]


async def paged_ids(client: httpx.AsyncClient, path: str, params: dict[str, str] | str = "", limit: int = 2) -> list[str]:
    """The ids of every item a list shows, page by page (`limit`, `cursor`), in its order: what
    an export of the same filters must hold. `params` as a dict, or as a query string."""
    query = httpx.QueryParams(params).multi_items()
    ids: list[str] = []
    cursor = None
    while True:
        paging = [("limit", str(limit)), *([("cursor", cursor)] if cursor else [])]
        page = (await client.get(path, params=[*query, *paging])).json()
        ids += [item["id"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            return ids


def enter_request_span() -> str:
    """Make a new span (not recorded) the current context, as a request's would be, and return
    its `traceparent`. Run it in a copied context (`contextvars.copy_context().run`) so it does
    not leak into other tests."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    span = TracerProvider(sampler=ALWAYS_OFF).get_tracer("cxkit.testing").start_span("request")
    otel_context.attach(trace.set_span_in_context(span))
    traceparent = trace.get_current_span().get_span_context()
    return f"00-{traceparent.trace_id:032x}-{traceparent.span_id:016x}-{int(traceparent.trace_flags):02x}"


# --- dashboards (cxkit.dashboard) ---------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[3]
AXE_SOURCE = REPO_ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
DASHBOARD_ARTIFACTS = REPO_ROOT / "var" / "test-artifacts" / "dashboard"


def form_token(html: str) -> str:
    """The `form_token` hidden field of a dashboard page."""
    import re

    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, "no form token on the page"
    return found.group(1)


async def dashboard_sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Signs in through the form as a browser would (the cookie stays in the client's jar)."""
    page = await client.get("/dashboard/sign-in")
    assert page.status_code == 200, page.text
    return await client.post(
        "/dashboard/sign-in", data={"api_key": key, "form_token": form_token(page.text), "next": "/dashboard"}
    )


def chart_values(html: str, chart_id: str) -> list[dict[str, str]]:
    """The `data-*` attributes of each plotted value (class `point` or `bar`) in the inline SVG
    chart `chart_id`, in document order."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.depth = 0
            self.found: list[dict[str, str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = {k: v or "" for k, v in attrs}
            if tag == "svg" and values.get("id") == chart_id:
                self.depth = 1
            elif self.depth and tag == "svg":
                self.depth += 1
            elif self.depth and set(values.get("class", "").split()) & {"point", "bar"}:
                self.found.append({k[5:]: v for k, v in values.items() if k.startswith("data-")})

        def handle_endtag(self, tag: str) -> None:
            if self.depth and tag == "svg":
                self.depth -= 1

    reader = Reader()
    reader.feed(html)
    return reader.found


def axe_serious(driver: Any) -> list[dict[str, Any]]:
    """Runs axe-core (tests/browser, installed by scripts/ensure_test_deps.sh) on the page open
    in `driver` and returns its serious and critical violations. Skips the test without it."""
    import pytest

    if not AXE_SOURCE.is_file():
        pytest.skip(f"needs axe-core at {AXE_SOURCE}; `make test` installs it (npm ci in tests/browser)")
    driver.execute_script(AXE_SOURCE.read_text(encoding="utf-8"))
    driver.set_script_timeout(60)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done({error: String(e)}));"
    )
    assert isinstance(result, list), result
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result
        if v.get("impact") in ("serious", "critical")
    ]


def at_width(driver: Any, width: int, *, mobile: bool = False) -> int:
    """Lays the open page out `width` CSS pixels wide (as a phone when `mobile`); returns the
    viewport width the page itself sees."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}
    )
    return int(driver.execute_script("return window.innerWidth"))


def full_page_screenshot(driver: Any, path: Path, width: int, *, mobile: bool = False) -> Path:
    """The page at `width` CSS pixels wide, its whole height, saved as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    at_width(driver, width, mobile=mobile)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": min(height, 16000), "deviceScaleFactor": 1, "mobile": mobile},
    )
    driver.save_screenshot(str(path))
    return path


def luminance(css_rgb: str) -> float:
    """WCAG relative luminance of a computed `rgb(r, g, b)` / `rgba(...)` color."""
    channels = [int(float(v)) / 255 for v in css_rgb[css_rgb.index("(") + 1 : css_rgb.index(")")].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two computed colors (1 to 21)."""
    lighter, darker = sorted((luminance(first), luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def color_scheme(driver: Any, scheme: str) -> None:
    """Emulate the system's light or dark color scheme (`prefers-color-scheme`) in Chromium."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})


# A dashboard's colors as the page computes them: the page, a card, and within the chart the
# first mark (a point or a bar) and the first text.
_DASHBOARD_COLORS = """
const chart = document.getElementById(arguments[0]);
const mark = chart.querySelector('.point, .bar'), text = chart.querySelector('text');
const card = chart.closest('section.card') || document.body;
return {page: getComputedStyle(document.body).backgroundColor, card: getComputedStyle(card).backgroundColor,
        ink: getComputedStyle(document.body).color, mark: mark ? getComputedStyle(mark).fill : null,
        text: text ? getComputedStyle(text).fill : null};
"""


def at_phone_and_desktop(driver: Any, name: str, chart_id: str) -> dict[str, Any]:
    """The open dashboard page laid out as a 412 px phone and a 1280 px desktop in the light color
    scheme, and as the phone in the dark one (the page follows the system's): at each a full-page
    screenshot (`DASHBOARD_ARTIFACTS/<name>-<width>[-dark].png`), the widths the page sees
    ([viewport, document scroll width, chart `chart_id`'s width]), axe's serious and critical
    violations and the colors of the page, a card and the chart's marks and text. Returns
    {"shots": [...], "widths": {w: [...]}, "axe-<w>": [...], "colors-<w>": {...}} with w 412,
    1280 and "412-dark"."""
    seen: dict[str, Any] = {"shots": [], "widths": {}}
    for width, mobile, scheme in ((412, True, "light"), (1280, False, "light"), (412, True, "dark")):
        color_scheme(driver, scheme)
        key: int | str = width if scheme == "light" else f"{width}-{scheme}"
        seen["shots"].append(full_page_screenshot(driver, DASHBOARD_ARTIFACTS / f"{name}-{key}.png", width, mobile=mobile))
        seen["widths"][key] = driver.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth,"
            " document.getElementById(arguments[0]).getBoundingClientRect().width]",
            chart_id,
        )
        seen[f"axe-{key}"] = axe_serious(driver)
        seen[f"colors-{key}"] = driver.execute_script(_DASHBOARD_COLORS, chart_id) | _keyboard_focus_ring(driver)
    color_scheme(driver, "light")
    return seen


def _keyboard_focus_ring(driver: Any) -> dict[str, str]:
    """Tab once from the top of the page: the focus ring's color and style on what the keyboard
    reached first (`:focus-visible` shows it for keyboard focus only)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    ActionChains(driver).send_keys(Keys.TAB).perform()
    ring: dict[str, str] = driver.execute_script(
        "const s = getComputedStyle(document.activeElement);"
        "return {ring: s.outlineColor, ring_style: s.outlineStyle, focused: document.activeElement.tagName};"
    )
    driver.execute_script("document.activeElement.blur()")
    return ring


def assert_laid_out(seen: dict[str, Any]) -> None:
    """What `at_phone_and_desktop` saw is a page that fits: no sideways scroll at any width, the
    chart drawn within it, no serious or critical axe violation, the screenshots taken; in the
    dark scheme a dark page; in each, its text and the chart's text at least 4.5:1 against the
    card, the chart's marks and the keyboard's focus ring at least 3:1 (WCAG 1.4.3 and 1.4.11;
    axe neither looks inside an SVG nor at focus rings)."""
    for key in (412, 1280, "412-dark"):
        inner, scroll, chart = seen["widths"][key]
        width = int(str(key).split("-")[0])
        assert inner == width and scroll <= width, f"the page scrolls sideways at {key}: {scroll}"
        assert 0 < chart <= width
        assert seen[f"axe-{key}"] == [], (key, seen[f"axe-{key}"])
        colors = seen[f"colors-{key}"]
        assert contrast(colors["ink"], colors["card"]) >= 4.5, (key, colors)
        if colors["text"]:
            assert contrast(colors["text"], colors["card"]) >= 4.5, (key, colors)
        if colors["mark"]:
            assert contrast(colors["mark"], colors["card"]) >= 3, (key, colors)
        # The keyboard's focus ring stands out from the page and the cards (WCAG 1.4.11; axe does not check it).
        assert colors["focused"] != "BODY" and colors["ring_style"] != "none", (key, colors)
        assert min(contrast(colors["ring"], colors["page"]), contrast(colors["ring"], colors["card"])) >= 3, (key, colors)
    dark, light = seen["colors-412-dark"], seen["colors-412"]
    assert luminance(dark["page"]) < 0.05 and luminance(dark["card"]) < 0.05, dark  # not the light page again
    assert luminance(light["card"]) > 0.8, light
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in seen["shots"])
