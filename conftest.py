"""Fixtures every suite shares: a PostgreSQL server for the run (the configured one, else an
embedded one) and a real broker (Tansu) started once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cxkit import testing
from cxkit.dev_broker import DevBroker

# Every event any test makes (in-process or in a service process started by a test) is
# checked against the published JSON Schema of its type; see cxkit.kafka.outbox.add_event.
os.environ["CX_VALIDATE_EVENTS"] = "1"

_EMBEDDED_POSTGRES = pytest.StashKey[testing.EmbeddedTestPostgres | None]()
_BROKER = pytest.StashKey[DevBroker]()
_STATE_SHOWN = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: CX_TEST_PG_DSN must be final before any fixture reads it.
    config.stash[_EMBEDDED_POSTGRES] = testing.start_test_postgres()


def pytest_report_header(config: pytest.Config) -> str:
    embedded = config.stash.get(_EMBEDDED_POSTGRES, None)
    if embedded is None:
        return f"postgres: {testing.admin_dsn()}"
    return f"postgres: embedded at {testing.admin_dsn()} (nothing answered at {embedded.instead_of})"


def pytest_unconfigure(config: pytest.Config) -> None:
    embedded = config.stash.get(_EMBEDDED_POSTGRES, None)
    if embedded is not None:
        embedded.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # At the run's first failure, the machine's state goes into the output at once (not only in
    # the summary, which a run killed for hanging never prints): a full disk, a server that went
    # away or a leaked transaction holding locks then shows as such, not as a row of failures.
    report = yield
    config = item.config
    if report.failed and not config.stash.get(_STATE_SHOWN, False):
        config.stash[_STATE_SHOWN] = True
        broker = config.stash.get(_BROKER, None)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(f"first failure ({item.nodeid}, {report.when}); the machine now:", yellow=True)
            for line in testing.machine_state(broker.bootstrap if broker is not None else None):
                reporter.write_line(f"  {line}")
    return report


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[DevBroker]:
    """A Kafka-compatible broker on a free port for the whole run."""
    instance = DevBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    pytestconfig.stash[_BROKER] = instance
    instance.start()
    yield instance
    instance.stop()
