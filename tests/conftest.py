"""Cross-service fixtures: both services as real uvicorn processes on fresh PostgreSQL
databases built by their migrations, talking through a real broker."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cem.cli import ALEMBIC_INI as CEM_ALEMBIC
from cem.db import ApiKey as CemApiKey
from crm.cli import ALEMBIC_INI as CRM_ALEMBIC
from crm.db import ApiKey as CrmApiKey
from cxkit import testing
from cxkit.db import make_engine, make_session_factory
from cxkit.dev_broker import DevBroker, dev_broker_env
from cxkit.http.auth import create_api_key, generate_key

from . import broker_evidence


@dataclass
class Stack:
    """Both services, their databases and one admin key valid on both."""

    crm_db: str
    cem_db: str
    key: str
    logs: Path
    bootstrap: str
    crm: testing.ServiceProcess | None = None
    cem: testing.ServiceProcess | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # More processes of either service (see replica()), stopped with the stack.
    replicas: list[testing.ServiceProcess] = field(default_factory=list)
    # Consumer groups of this stack's own, so stacks that share a broker never wait on each
    # other's group membership or inherit each other's committed offsets.
    group_suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def group(self, prefix: str) -> str:
        return f"{prefix.lower()}-service-{self.group_suffix}"

    def env(self, prefix: str, db: str) -> dict[str, str]:
        env = {
            f"{prefix}_DATABASE_URL": db,
            f"{prefix}_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            **dev_broker_env(prefix),
            f"{prefix}_OUTBOX_POLL_INTERVAL_MS": "100",
            f"{prefix}_LOG_JSON": "true",
            f"{prefix}_CONSUMER_GROUP": self.group(prefix),
            **self.extra_env,
        }
        if prefix == "CRM":
            env["CRM_DOCUMENTS_DIR"] = str(self.logs / "crm-documents")
        return env

    def start(self) -> tuple[testing.ServiceProcess, testing.ServiceProcess]:
        """Both services, launched together so their start-ups overlap; (crm, cem), both ready."""
        self.crm, self.cem = self._process("CRM"), self._process("CEM")
        self._ready(self.crm, self.cem)
        return self.crm, self.cem

    def start_crm(self) -> testing.ServiceProcess:
        self.crm = self._process("CRM")
        return self._ready(self.crm)[0]

    def start_cem(self) -> testing.ServiceProcess:
        self.cem = self._process("CEM")
        return self._ready(self.cem)[0]

    def _process(self, prefix: str) -> testing.ServiceProcess:
        """The service's process (not started), on the port it had if it ran before."""
        earlier = self.crm if prefix == "CRM" else self.cem
        db = self.crm_db if prefix == "CRM" else self.cem_db
        name = prefix.lower()
        port = earlier.port if earlier else None
        return testing.ServiceProcess(f"{name}.main:create_app", self.env(prefix, db), self.logs / f"{name}.log", port)

    @staticmethod
    def _ready(*procs: testing.ServiceProcess) -> tuple[testing.ServiceProcess, ...]:
        for proc in procs:
            proc.launch()
        for proc in procs:
            proc.wait_healthy()
        for proc in procs:
            proc.wait_ready()
        return procs

    def replica(self, prefix: str, start: bool = True) -> testing.ServiceProcess:
        """One more process of the service (`CRM` or `CEM`): the same database, settings and
        consumer group, on its own port and log (`crm-2.log`, ...). Started and ready unless
        `start` is false; stopped with the stack."""
        factory = "crm.main:create_app" if prefix == "CRM" else "cem.main:create_app"
        db = self.crm_db if prefix == "CRM" else self.cem_db
        log = self.logs / f"{prefix.lower()}-{2 + sum(r.factory == factory for r in self.replicas)}.log"
        proc = testing.ServiceProcess(factory, self.env(prefix, db), log)
        self.replicas.append(proc)
        if start:
            proc.start()
            proc.wait_ready()
        return proc

    def stop(self) -> None:
        for proc in (self.crm, self.cem, *self.replicas):
            if proc is not None:
                proc.stop()

    def crm_client(self) -> httpx.AsyncClient:
        assert self.crm is not None
        return httpx.AsyncClient(base_url=self.crm.url, headers=testing.bearer(self.key), timeout=10)

    def cem_client(self) -> httpx.AsyncClient:
        assert self.cem is not None
        return httpx.AsyncClient(base_url=self.cem.url, headers=testing.bearer(self.key), timeout=10)


async def _add_key(url: str, model: type, key: str) -> None:
    engine = make_engine(url)
    try:
        async with make_session_factory(engine)() as session:
            await create_api_key(session, model, name="e2e", scopes=["admin"], key=key)
            await session.commit()
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def migrated_templates() -> AsyncIterator[tuple[str, str]]:
    """Both services' databases built once by their migrations, as templates for `databases`
    (nobody connects to them)."""
    crm_name, _ = await testing.migrated_database("e2e_crm_template", CRM_ALEMBIC)
    cem_name, _ = await testing.migrated_database("e2e_cem_template", CEM_ALEMBIC)
    yield crm_name, cem_name
    await testing.drop_database(crm_name)
    await testing.drop_database(cem_name)


@pytest.fixture
async def databases(migrated_templates: tuple[str, str]) -> AsyncIterator[tuple[str, str]]:
    """Fresh, migrated databases for one test (the services run out of process): copies of the
    templates, much faster than running both services' migrations for every test."""
    crm_name, crm_url = await testing.clone_database(migrated_templates[0], "e2e_crm")
    cem_name, cem_url = await testing.clone_database(migrated_templates[1], "e2e_cem")
    yield crm_url, cem_url
    await testing.drop_database(crm_name)
    await testing.drop_database(cem_name)


# Where a failed cross-service test leaves its services' and broker's logs (pytest's own temporary
# directories are deleted after a few runs): the evidence of a rare fault, kept for whoever looks.
FAILED_TEST_LOGS = Path(__file__).resolve().parents[1] / "var" / "test-artifacts" / "failed"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)  # read by the fixtures below at teardown
    if report.when == "call" and report.failed:
        # While the services, broker and databases are still there: what each consumer group
        # committed, and any event it skipped or never reached (kept with the logs).
        for n, stack in enumerate(getattr(item, "cx_stacks", [])):
            broker_evidence.write(
                stack.logs / f"broker-evidence-{n}.json",
                stack.bootstrap,
                {"CRM": stack.group("CRM"), "CEM": stack.group("CEM")},
                {"CRM": stack.crm_db, "CEM": stack.cem_db},
            )
    return report


@pytest.fixture
async def stack_factory(
    databases: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[str], Stack]]:
    """Call with a bootstrap address to get a Stack (services not started yet). If the test
    fails, the logs in its temporary directory are copied to `FAILED_TEST_LOGS/<test>/`."""
    key = generate_key()
    await _add_key(databases[0], CrmApiKey, key)
    await _add_key(databases[1], CemApiKey, key)
    made: list[Stack] = []
    request.node.cx_stacks = made  # type: ignore[attr-defined]  # read by pytest_runtest_makereport

    def make(bootstrap: str) -> Stack:
        stack = Stack(crm_db=databases[0], cem_db=databases[1], key=key, logs=tmp_path, bootstrap=bootstrap)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        kept = FAILED_TEST_LOGS / request.node.name
        shutil.copytree(tmp_path, kept, ignore=shutil.ignore_patterns("*-data", "*.sock"), dirs_exist_ok=True)
        print(f"logs of the failed test kept in {kept}")


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[DevBroker]:
    """A broker of the test's own, so it may be stopped and started."""
    instance = DevBroker(log_path=tmp_path / "private-broker.log")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
async def broker_behind_proxy(tmp_path: Path) -> AsyncIterator[testing.BrokerBehindProxy]:
    """A broker of the test's own that clients reach through a proxy, so it may be made
    unreachable while keeping its data, or restarted empty."""
    instance = testing.BrokerBehindProxy(log_path=tmp_path / "proxied-broker.log")
    await instance.start()
    yield instance
    await instance.stop()
