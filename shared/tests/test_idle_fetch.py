"""The fetch wait of an idle consumer (`CONSUMER_IDLE_FETCH_MAX_WAIT_MS`): the dev broker holds
each fetch for its whole wait, so the short wait that keeps events quick there made an idle
consumer fetch 50 times a second. After a second without a message the consumer asks with the
longer wait; the first message brings the short one back. Checked on the fetch requests aiokafka
builds, against the real broker and database."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.consumer import fetcher
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from cxkit.kafka.consumer import IDLE_AFTER_S
from cxkit.settings import ServiceSettings
from cxkit.testing import wait_for

from .conftest import applied, applying, consuming, customer_event, publish

BUSY_MS, IDLE_MS = 20, 300


class Requests:
    """Each fetch request aiokafka builds: (time.monotonic(), its max wait in ms)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.sent: list[tuple[float, int]] = []
        build = fetcher.FetchRequest

        def recorded(max_wait_ms: int, *args: Any, **kwargs: Any) -> Any:
            self.sent.append((time.monotonic(), max_wait_ms))
            return build(max_wait_ms, *args, **kwargs)

        monkeypatch.setattr(fetcher, "FetchRequest", recorded)

    def since(self, start: float) -> list[int]:
        return [wait for at, wait in self.sent if at >= start]


@contextlib.asynccontextmanager
async def idle_consumer(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine, topic: str, monkeypatch: Any, idle_ms: int | None
) -> AsyncIterator[tuple[Requests, str]]:
    """A consumer of `topic` (fetch waits BUSY_MS and `idle_ms`), once it holds its partitions and
    has had no message for longer than IDLE_AFTER_S: the fetch requests sent, and its applier."""
    settings = kit_settings.model_copy(update={"consumer_fetch_max_wait_ms": BUSY_MS, "consumer_idle_fetch_max_wait_ms": idle_ms})
    requests = Requests(monkeypatch)
    applier = f"idle-{uuid.uuid4().hex[:8]}"
    async with consuming(settings, kit_engine, f"idle-fetch-{uuid.uuid4().hex[:8]}", topic, applying(applier)) as consumer:

        async def assigned() -> bool:
            return consumer.assigned

        await wait_for(assigned)
        await asyncio.sleep(IDLE_AFTER_S + 0.5)
        yield requests, applier


async def test_an_idle_consumer_fetches_with_the_longer_wait_and_a_message_brings_the_short_one_back(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine, sessions: async_sessionmaker, topic: str, monkeypatch: Any
) -> None:
    async with idle_consumer(kit_settings, kit_engine, topic, monkeypatch, IDLE_MS) as (requests, applier):
        quiet = time.monotonic()
        await asyncio.sleep(1.5)
        idle = requests.since(quiet)
        # Held 300 ms each: a handful in 1.5 s (with 20 ms, about 75).
        assert idle and set(idle) == {IDLE_MS}, idle
        assert len(idle) <= 10, len(idle)

        async def applied_count(n: int) -> bool:
            return len(await applied(sessions, applier)) == n

        customer = uuid.uuid4()
        woke = time.monotonic()
        await publish(kit_settings.kafka_bootstrap_servers, topic, [(customer.bytes, customer_event(customer, 1))])
        await wait_for(lambda: applied_count(1))
        # Once a message came, the fetches are short again: the next message is read within one.
        busy = time.monotonic()
        await asyncio.sleep(0.3)
        assert set(requests.since(busy)) == {BUSY_MS}, requests.since(busy)
        assert requests.since(woke).count(BUSY_MS) >= 5

        await publish(kit_settings.kafka_bootstrap_servers, topic, [(customer.bytes, customer_event(customer, 2))])
        await wait_for(lambda: applied_count(2))


async def test_unset_the_wait_stays_as_configured(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine, topic: str, monkeypatch: Any
) -> None:
    async with idle_consumer(kit_settings, kit_engine, topic, monkeypatch, None) as (requests, _):
        quiet = time.monotonic()
        await asyncio.sleep(1.0)
        assert set(requests.since(quiet)) == {BUSY_MS}
        assert len(requests.since(quiet)) >= 20  # the dev broker answers each after 20 ms
