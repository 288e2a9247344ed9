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


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """A Kafka-compatible broker on a free port for the whole run."""
    instance = DevBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    instance.start()
    yield instance
    instance.stop()
