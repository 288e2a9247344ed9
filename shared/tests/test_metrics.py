"""The metrics ops alert on (cxkit.metrics), as /metrics shows them: request latency by route
template (never the raw path), the outbox backlog and its oldest row's age as the relay keeps
them, consumer lag per partition and DLQ messages by reason as a consumer moves them, relay and
consumer errors, and several processes' figures added up in multiprocess mode."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit.http.app import install_platform
from cxkit.kafka.consumer import Delivery, EventConsumer, dlq_reason_kind
from cxkit.kafka.outbox import OutboxRelay
from cxkit.metrics import DLQ_REASONS, ERROR_KINDS, MULTIPROC_DIR_ENV, exposition
from cxkit.settings import ServiceSettings
from cxkit.testing import metric_total, wait_for

from .conftest import SOURCE, Outbox, applying, consuming, customer_event, publish, settle
from .test_outbox_relay import write_events

Sessions = async_sessionmaker[AsyncSession]


def scrape() -> str:
    return exposition()[0].decode()


def kit_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None)

    @app.get("/r/{token}")
    async def respondent_page(token: str) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: uuid.UUID) -> dict[str, str]:
        return {"id": str(thing_id)}

    install_platform(app, "kit-metrics")
    return app


async def test_request_latency_is_labelled_by_route_template_method_and_status_class() -> None:
    token, thing = "tok-" + uuid.uuid4().hex, uuid.uuid4()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=kit_app()), base_url="http://kit") as client:
        assert (await client.get(f"/r/{token}")).status_code == 200
        assert (await client.get(f"/v1/things/{thing}")).status_code == 200
        assert (await client.get("/v1/things/not-a-uuid")).status_code == 422
        assert (await client.get(f"/nowhere/{token}")).status_code == 404
        text = (await client.get("/metrics")).text

    assert token not in text and str(thing) not in text and "not-a-uuid" not in text  # no raw path is a label
    bucket = "http_request_duration_seconds_bucket"
    assert metric_total(text, bucket, method="GET", route="/r/{token}", status_class="2xx", le="+Inf") >= 1
    assert metric_total(text, bucket, route="/v1/things/{thing_id}", status_class="2xx", le="+Inf") >= 1
    assert metric_total(text, bucket, route="/v1/things/{thing_id}", status_class="4xx", le="+Inf") >= 1
    assert metric_total(text, "http_request_duration_seconds_count", route="unmatched", status_class="4xx") >= 1
    assert metric_total(text, "http_requests_total", route="/v1/things/{thing_id}", status="422") >= 1
    assert metric_total(text, bucket, route="/r/{token}", le="0.025") <= metric_total(text, bucket, route="/r/{token}", le="+Inf")


@pytest.fixture
def relay_settings(kit_settings: ServiceSettings) -> ServiceSettings:
    return kit_settings.model_copy(update={"outbox_batch_size": 5})


async def test_relay_reports_backlog_and_oldest_unsent_age_and_zero_once_drained(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    service = relay_settings.service_name
    sent_before = metric_total(scrape(), "outbox_sent_total", topic=topic)
    await write_events(sessions, topic, [(uuid.uuid4(), 1) for _ in range(7)])
    async with sessions() as session, session.begin():  # written half a minute ago
        await session.execute(update(Outbox).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)))
    relay = OutboxRelay(relay_settings, sessions, Outbox, [topic])
    try:
        await relay.measure_backlog(force=True)
        text = scrape()
        assert metric_total(text, "outbox_backlog", service=service) == 7
        assert 30 <= metric_total(text, "outbox_oldest_unsent_age_seconds", service=service) < 60

        assert await relay.relay_once() == 5  # a full batch: rows may wait, counted again once the interval passed
        assert metric_total(scrape(), "outbox_backlog", service=service) == 7
        relay.backlog_interval_s = 0
        await relay.measure_backlog()
        assert metric_total(scrape(), "outbox_backlog", service=service) == 2

        assert await relay.relay_once() == 2  # emptied the outbox: zero, without counting
        text = scrape()
        assert metric_total(text, "outbox_backlog", service=service) == 0
        assert metric_total(text, "outbox_oldest_unsent_age_seconds", service=service) == 0
        assert metric_total(text, "outbox_sent_total", topic=topic) - sent_before == 7
    finally:
        await relay.stop()


async def test_a_failing_relay_counts_its_errors_by_kind_and_keeps_counting_the_backlog(
    relay_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    settings = relay_settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:9", "service_name": "kit-no-broker"})
    await write_events(sessions, topic, [(uuid.uuid4(), 1)])
    relay = OutboxRelay(settings, sessions, Outbox, [topic])
    task = asyncio.create_task(relay.run())
    try:

        async def failed_and_counted() -> bool:
            text = scrape()
            return (
                metric_total(text, "outbox_relay_errors_total", service="kit-no-broker") >= 1
                and metric_total(text, "outbox_backlog", service="kit-no-broker") == 1
            )

        await wait_for(failed_and_counted, timeout=20, interval=0.1)
    finally:
        await settle(task)
        await relay.stop()
    kinds = {k for k in ERROR_KINDS if metric_total(scrape(), "outbox_relay_errors_total", service="kit-no-broker", kind=k)}
    assert kinds == {"broker"}


class Stuck:
    """Applies `customer.updated` events, but fails as a dropped connection does while `stuck`."""

    def __init__(self, applier: str) -> None:
        self.record = applying(applier)
        self.stuck = True

    async def __call__(self, session: AsyncSession, deliveries: list[Delivery]) -> None:
        if self.stuck:
            raise ConnectionResetError("connection reset by peer")
        await self.record(session, deliveries)


@pytest.fixture
async def stuck_consumer(
    kit_settings: ServiceSettings, kit_engine: AsyncEngine, topic: str
) -> AsyncIterator[tuple[EventConsumer, Stuck]]:
    name = f"kit-metrics-{uuid.uuid4().hex[:8]}"
    handler = Stuck(name)
    async with consuming(kit_settings, kit_engine, name, topic, handler) as consumer:
        yield consumer, handler


async def test_consumer_lag_per_partition_grows_while_stuck_and_returns_to_zero_and_dlq_counts_by_reason(
    stuck_consumer: tuple[EventConsumer, Stuck], kit_settings: ServiceSettings, topic: str
) -> None:
    consumer, handler = stuck_consumer
    name = consumer.name
    customer = uuid.uuid4()
    await publish(kit_settings.kafka_bootstrap_servers, topic, [(b"k", customer_event(customer, v)) for v in range(1, 5)])

    async def lagging() -> bool:  # and failing, rewound, retried
        text = scrape()
        return (
            metric_total(text, "consumer_lag", consumer=name, topic=topic) == 4
            and metric_total(text, "consumer_errors_total", consumer=name, kind="other") >= 2
        )

    await wait_for(lagging, timeout=30, interval=0.1)
    text = scrape()
    partitions = [ln for ln in text.splitlines() if ln.startswith("consumer_lag{") and f'topic="{topic}"' in ln]
    assert len(partitions) == 3  # every assigned partition has its own series; the lag sits on the key's
    assert sorted(float(ln.rsplit(" ", 1)[1]) for ln in partitions) == [0, 0, 4]

    handler.stuck = False

    # An event counts as handled when its transaction commits; the lag drops once the poll's
    # offsets are committed too (a round trip to the broker later), so both are waited for.
    async def caught_up() -> bool:
        text = scrape()
        return (
            metric_total(text, "events_handled_total", consumer=name) == 4
            and metric_total(text, "consumer_lag", consumer=name, topic=topic) == 0
        )

    await wait_for(caught_up, timeout=20, interval=0.1)
    assert metric_total(scrape(), "consumer_lag", consumer=name, topic=topic) == 0

    bad = [b'{"not json', orjson.dumps({"specversion": "1.0", "id": "x", "source": SOURCE, "type": "no.such.type"})]
    await publish(kit_settings.kafka_bootstrap_servers, topic, [(b"k", m) for m in bad])

    async def dead_lettered() -> bool:
        text = scrape()
        return (
            metric_total(text, "dlq_messages_total", consumer=name) == 2
            and metric_total(text, "consumer_lag", consumer=name, topic=topic) == 0
        )

    await wait_for(dead_lettered, timeout=20, interval=0.1)
    text = scrape()
    assert metric_total(text, "dlq_messages_total", consumer=name, topic=topic, reason="malformed") == 1
    assert metric_total(text, "dlq_messages_total", consumer=name, topic=topic, reason="unknown_type") == 1
    assert metric_total(text, "consumer_lag", consumer=name, topic=topic) == 0


def test_dlq_reasons_map_to_a_bounded_set() -> None:
    reasons = {
        "not JSON: unexpected end of data": "malformed",
        "empty message value": "malformed",
        "not a CloudEvent: id: Field required": "malformed",
        "unknown event type 'x.y'": "unknown_type",
        "invalid customer.updated data: id: Field required": "invalid_data",
        "rejected by handler: refuses this customer": "rejected",
        "handler failed after 5 attempts: ValueError('bug')": "handler_failed",
    }
    assert {reason: dlq_reason_kind(reason) for reason in reasons} == reasons
    assert set(reasons.values()) == set(DLQ_REASONS)


WORKER = textwrap.dedent(
    """
    import sys
    from cxkit.metrics import CONSUMER_LAG, HTTP_LATENCY, HTTP_REQUESTS, OUTBOX_BACKLOG

    n, backlog, partition = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    for _ in range(n):
        HTTP_REQUESTS.labels("GET", "/v1/customers/{customer_id}", "200").inc()
        HTTP_LATENCY.labels("GET", "/v1/customers/{customer_id}", "2xx").observe(0.01)
    OUTBOX_BACKLOG.labels("crm-service").set(backlog)
    CONSUMER_LAG.labels("crm-service", "cx.interactions", partition).set(n)
    """
)


async def test_multiprocess_mode_adds_up_every_workers_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes writing to one PROMETHEUS_MULTIPROC_DIR (as two uvicorn workers do), and
    /metrics answered from a third: counters and histograms summed, the backlog the latest
    measured, each partition's lag from the process that read it."""
    env = {MULTIPROC_DIR_ENV: str(tmp_path), "PATH": "/usr/bin:/bin"}
    for n, backlog, partition in ((3, 10, "0"), (5, 7, "1")):  # one after the other: the second is the latest
        worker = await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER, str(n), str(backlog), partition, env=env)
        assert await asyncio.wait_for(worker.wait(), 60) == 0

    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=kit_app()), base_url="http://kit") as client:
        text = (await client.get("/metrics")).text
    route = "/v1/customers/{customer_id}"
    assert metric_total(text, "http_requests_total", route=route, status="200") == 8
    assert metric_total(text, "http_request_duration_seconds_count", route=route, status_class="2xx") == 8
    assert metric_total(text, "http_request_duration_seconds_bucket", route=route, le="0.025") == 8
    assert metric_total(text, "outbox_backlog", service="crm-service") == 7
    assert metric_total(text, "consumer_lag", topic="cx.interactions", partition="0") == 3
    assert metric_total(text, "consumer_lag", topic="cx.interactions", partition="1") == 5
