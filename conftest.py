"""Fixtures every suite shares: a real broker (Tansu) started once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cxkit.dev_broker import DevBroker

# Every event any test makes (in-process or in a service process started by a test) is
# checked against the published JSON Schema of its type; see cxkit.kafka.outbox.add_event.
os.environ["CX_VALIDATE_EVENTS"] = "1"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """A Kafka-compatible broker on a free port for the whole run."""
    instance = DevBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    instance.start()
    yield instance
    instance.stop()
