"""Signed webhooks (cxkit.webhooks): fan-out from the outbox relay, delivery by the worker to
a real local receiver that verifies every signature, retries, disabling, ordering, the delivery
log, manual redelivery and the SSRF guard. Real PostgreSQL and the dev broker throughout."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cxkit.db import session_connection, utcnow
from cxkit.events.payloads import CustomerUpdated
from cxkit.http.problems import Conflict, NotFound, Unprocessable
from cxkit.kafka.outbox import OutboxRelay, outbox_row
from cxkit.metrics import exposition
from cxkit.settings import ServiceSettings
from cxkit.testing import metric_total
from cxkit.webhooks import service, targets
from cxkit.webhooks.delivery import WebhookFanout, Webhooks, WebhookWorker, backoff_seconds, retry_after_seconds
from cxkit.webhooks.schemas import WebhookCreate, WebhookSecretRotation, WebhookUpdate
from cxkit.webhooks.signing import signed_headers
from cxkit.webhooks.targets import TargetRefused, check_target, is_public
from cxkit.webhooks.testing import ForwardProxy, WebhookReceiver

from .conftest import SOURCE, Outbox, WebhookDelivery, WebhookSubscription, read_topic, settle

TYPES = ["customer.updated", "customer.created"]


@pytest.fixture
def hook_settings(kit_settings: ServiceSettings) -> ServiceSettings:
    """Loopback receivers allowed, and retries within tenths of a second."""
    return kit_settings.model_copy(
        update={
            "webhook_allow_private_targets": True,
            "webhook_retry_base_seconds": 0.05,
            "webhook_retry_max_seconds": 0.2,
            "webhook_timeout_seconds": 0.5,
            "webhook_poll_interval_ms": 20,
            "webhook_subscription_cache_seconds": 0,
        }
    )


@pytest.fixture
def webhooks(hook_settings: ServiceSettings) -> Webhooks:
    return Webhooks(WebhookSubscription, WebhookDelivery, TYPES, hook_settings)


@pytest.fixture
async def worker(webhooks: Webhooks, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[WebhookWorker]:
    """The delivery worker, running."""
    worker = WebhookWorker(webhooks, sessions)
    task = asyncio.create_task(worker.run())
    yield worker
    await settle(task)
    await worker.stop()


async def subscribe(sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, url: str, **fields: Any) -> Any:
    async with sessions() as session, session.begin():
        subscription = await service.create_subscription(session, webhooks, WebhookCreate(url=url, **fields))
    webhooks.subscriptions_changed()
    return subscription


def event_rows(
    topic: str, customers: list[uuid.UUID], per_customer: int, event_type: str = "customer.updated"
) -> list[dict[str, Any]]:
    """Outbox rows (on the test's own topic), customer by customer interleaved: c1v1, c2v1, c1v2..."""
    rows = []
    for version in range(1, per_customer + 1):
        for customer in customers:
            data = CustomerUpdated(id=customer, name=f"v{version}", version=version, changed=["name"])
            row = outbox_row(event_type, source=SOURCE, subject=customer, data=data)
            rows.append(row | {"topic": topic})
    return rows


async def queue(sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, rows: list[dict[str, Any]]) -> None:
    """What the relay does for rows the broker acknowledged (see test_the_relay_queues...)."""
    fanout = WebhookFanout(webhooks)
    async with sessions() as session, session.begin():
        await fanout.add(await session_connection(session), rows)
    fanout.committed()


async def deliveries(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
    async with sessions() as session:
        return list((await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.seq))).all())


async def subscription(sessions: async_sessionmaker[AsyncSession], subscription_id: uuid.UUID) -> Any:
    async with sessions() as session:
        return await session.get(WebhookSubscription, subscription_id)


async def one_round(webhooks: Webhooks, sessions: async_sessionmaker[AsyncSession]) -> int:
    """One round of a new worker (`deliver_once`): how many deliveries it attempted."""
    worker = WebhookWorker(webhooks, sessions)
    try:
        return await worker.deliver_once()
    finally:
        await worker.stop()


async def eventually(check: Any, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_the_relay_queues_signed_deliveries_of_matching_events(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, worker: WebhookWorker, topic: str
) -> None:
    """Events the relay sends reach each subscription whose filter matches, as the CloudEvent on
    Kafka, signed (the receiver verifies with standardwebhooks), `webhook-id` = the event id."""
    async with WebhookReceiver() as receiver, WebhookReceiver() as created_only:
        sub = await subscribe(sessions, webhooks, receiver.url, event_types=[])
        receiver.secret = sub.secret
        other = await subscribe(sessions, webhooks, created_only.url, event_types=["customer.created"])
        created_only.secret = other.secret
        rows = event_rows(topic, [uuid.uuid4()], 3)
        async with sessions() as session, session.begin():
            session.add_all(Outbox(**row) for row in rows)
        relay = OutboxRelay(webhooks.settings, sessions, Outbox, [topic], on_sent=WebhookFanout(webhooks))
        try:
            assert await relay.relay_once() == 3
        finally:
            await relay.stop()
        got = await receiver.wait_for(3)
        on_kafka = await read_topic(webhooks.settings.kafka_bootstrap_servers, topic, at_least=3)
        assert [r.body for r in got] == [r.value for r in on_kafka] == [row["value"] for row in rows]
        assert [r.webhook_id for r in got] == [str(row["event_id"]) for row in rows]
        assert all(r.headers["webhook-signature"].startswith("v1,") for r in got)
        assert receiver.bad_signatures == 0
        await asyncio.sleep(0.2)
        assert created_only.received == []  # customer.updated is not in its filter
    assert sub.secret.startswith("whsec_")


async def test_a_wrong_secret_fails_verification() -> None:
    """The receiver's check is real: a signature made with another secret is refused."""
    from standardwebhooks import Webhook, WebhookVerificationError

    from cxkit.webhooks.signing import new_secret

    body = b'{"id": "1"}'
    headers = signed_headers(new_secret(), "evt-1", body, utcnow())
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


async def test_a_rotated_secret_signs_beside_the_new_one_until_it_expires(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, worker: WebhookWorker, topic: str
) -> None:
    """A receiver switches to the new secret without refusing a delivery: the replaced secret
    signs beside it (a second `v1,` signature) until its time is up, then only the new one
    signs; a rotation that keeps nothing stops the old one at once."""
    from standardwebhooks import Webhook, WebhookVerificationError

    async def rotate(sub_id: uuid.UUID, keep_seconds: int) -> Any:
        async with sessions() as session, session.begin():
            rotation = WebhookSecretRotation(previous_secret_expires_in_seconds=keep_seconds)
            return await service.rotate_secret(session, webhooks, sub_id, None, rotation)

    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        old = receiver.secret = sub.secret  # the receiver has not switched yet
        rotated = await rotate(sub.id, 3600)
        new = rotated.secret
        assert new != old and abs((rotated.previous_secret_expires_at - utcnow()).total_seconds() - 3600) < 60
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        [first] = await receiver.wait_for(1)
        assert receiver.bad_signatures == 0 and len(first.headers["webhook-signature"].split(" ")) == 2
        Webhook(new).verify(first.body, first.headers)  # a receiver that switched accepts it too

        async with sessions() as session, session.begin():  # the overlap is over
            await session.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == sub.id)
                .values(previous_secret_expires_at=utcnow() - dt.timedelta(seconds=1))
            )
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        await eventually(lambda: _bad_signature_seen(receiver))  # the old secret no longer verifies
        await worker.sweep()  # and the worker's sweep forgets it; the read still says when it expired
        swept = await subscription(sessions, sub.id)
        assert swept.previous_secret is None and swept.previous_secret_expires_at < utcnow()
        receiver.secret = new
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        [_, second] = await receiver.wait_for(2)
        assert len(second.headers["webhook-signature"].split(" ")) == 1

        newest = (await rotate(sub.id, 0)).secret  # nothing kept
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        await eventually(lambda: _bad_signature_seen(receiver, 2))
        receiver.secret = newest
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        [*_, third] = await receiver.wait_for(3)
        assert len(third.headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(WebhookVerificationError):
            Webhook(new).verify(third.body, third.headers)
    assert (await subscription(sessions, sub.id)).previous_secret is None


async def _bad_signature_seen(receiver: WebhookReceiver, count: int = 1) -> bool:
    return receiver.bad_signatures >= count


async def test_timeouts_408_429_and_5xx_are_retried_with_the_same_webhook_id(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, worker: WebhookWorker, topic: str
) -> None:
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        receiver.script.extend([500, 429, 408, 503, ("slow", 1.0)])
        [row] = event_rows(topic, [uuid.uuid4()], 1)
        await queue(sessions, webhooks, [row])

        async def delivered() -> Any:
            [d] = await deliveries(sessions)
            return d if d.status == "succeeded" else None

        d = await eventually(delivered)
    assert d.attempts == 6
    assert [a["status_code"] for a in d.attempt_log] == [500, 429, 408, 503, None, 200]
    assert "no answer within" in d.attempt_log[4]["error"]
    assert d.last_status_code == 200 and d.next_attempt_at is None and d.delivered_at is not None
    assert {r.webhook_id for r in receiver.received} == {str(row["event_id"])}
    assert len(receiver.accepted) == 1
    assert (await subscription(sessions, sub.id)).consecutive_failures == 0


async def test_a_429_or_503_retry_after_is_waited_for_but_never_past_the_retry_window(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    """Retries here wait at most 0.2 s (`hook_settings`); a receiver's Retry-After asks for more."""
    worker = WebhookWorker(webhooks, sessions)
    in_a_minute = email.utils.format_datetime(utcnow() + dt.timedelta(seconds=60), usegmt=True)
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        customers = [uuid.uuid4() for _ in range(5)]
        answers = [
            ("retry-after", 429, "120"),  # seconds
            ("retry-after", 503, in_a_minute),  # an HTTP date
            ("retry-after", 429, "99999999999999999999999"),  # longer than the retry window (and any date)
            ("retry-after", 500, "120"),  # not an answer Retry-After goes with: the usual backoff
            ("retry-after", 429, "soon"),  # not understood: the usual backoff
        ]
        for customer, answer in zip(customers, answers, strict=True):
            receiver.script_for[str(customer)] = deque([answer])
        await queue(sessions, webhooks, event_rows(topic, customers, 1))
        before = utcnow()
        try:
            assert await worker.deliver_once() == 5
        finally:
            await worker.stop()
    by_customer = {d.ordering_key: d for d in await deliveries(sessions)}
    waits = [(by_customer[str(c)].next_attempt_at - before).total_seconds() for c in customers]
    assert all(by_customer[str(c)].status == "pending" for c in customers)
    assert 119 < waits[0] < 125
    assert 55 < waits[1] < 65
    window_end = by_customer[str(customers[2])].expires_at
    assert by_customer[str(customers[2])].next_attempt_at == window_end
    assert 0 < waits[3] < 5 and 0 < waits[4] < 5


def test_retry_after_values() -> None:
    now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("30", now) == 30.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    assert retry_after_seconds("Fri, 04 Dec 2026 12:01:30 GMT", now) == 90.0
    assert retry_after_seconds("Friday, 04-Dec-26 12:00:10 GMT", now) == 10.0  # the obsolete RFC 850 form
    assert retry_after_seconds("Fri, 04 Dec 2026 11:00:00 GMT", now) == 0.0  # already past
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT", now) == pytest.approx(2.516e11, rel=0.01)
    for unusable in (None, "", "-5", "1.5", "²", "١٢", "soon", "Fri, 99 Dec 2026 12:00:00 GMT"):
        assert retry_after_seconds(unusable, now) is None, unusable


async def test_410_gives_up_and_disables_the_subscription(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, worker: WebhookWorker, topic: str
) -> None:
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        receiver.script.append(410)
        rows = event_rows(topic, [uuid.uuid4()], 2)
        await queue(sessions, webhooks, rows)
        await eventually(lambda: _status_is(sessions, sub.id, enabled=False))
        await asyncio.sleep(0.2)
    first, second = await deliveries(sessions)
    assert (first.status, first.attempts, first.last_status_code) == ("failed", 1, 410)
    assert (second.status, second.attempts) == ("pending", 0)  # waits for the subscription to come back
    disabled = await subscription(sessions, sub.id)
    assert "410" in disabled.disabled_reason
    await worker.measure_backlog(force=True)
    metrics = exposition()[0].decode()
    assert metric_total(metrics, "webhook_backlog", service=webhooks.settings.service_name) == 1
    assert metric_total(metrics, "webhook_delivery_attempts_total", outcome="failed") >= 1
    assert len(receiver.received) == 1


async def _status_is(sessions: async_sessionmaker[AsyncSession], subscription_id: uuid.UUID, *, enabled: bool) -> bool:
    return bool((await subscription(sessions, subscription_id)).enabled is enabled)


async def test_a_run_of_failures_disables_the_subscription(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    webhooks.settings = webhooks.settings.model_copy(update={"webhook_failures_before_disable": 3})
    worker = WebhookWorker(webhooks, sessions)
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        receiver.script.extend([500] * 10)
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        task = asyncio.create_task(worker.run())
        try:
            await eventually(lambda: _status_is(sessions, sub.id, enabled=False))
            await asyncio.sleep(0.3)
        finally:
            await settle(task)
            await worker.stop()
    disabled = await subscription(sessions, sub.id)
    assert disabled.consecutive_failures == 3 and "3 consecutive failed attempts" in disabled.disabled_reason
    [d] = await deliveries(sessions)
    assert (d.status, d.attempts) == ("pending", 3)
    assert len(receiver.received) == 3


async def test_other_client_errors_and_expired_deliveries_are_given_up(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    """A 400 is not retried; a 500 after the retry window (WEBHOOK_MAX_AGE_HOURS) is the last."""
    worker = WebhookWorker(webhooks, sessions)
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        receiver.script.extend([400, 500])
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 2))
        async with sessions() as session, session.begin():  # the second was queued before the window closed
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.seq == select(func.max(WebhookDelivery.seq)).scalar_subquery())
                .values(expires_at=utcnow() - dt.timedelta(seconds=1))
            )
        try:
            assert await worker.deliver_once() == 1
            assert await worker.deliver_once() == 1  # the customer's next, once the first is given up
        finally:
            await worker.stop()
    a, b = await deliveries(sessions)
    assert (a.status, a.attempts, a.last_status_code) == ("failed", 1, 400)
    assert (b.status, b.attempts, b.last_status_code) == ("failed", 1, 500)


async def _all_finished(sessions: async_sessionmaker[AsyncSession]) -> bool:
    rows = await deliveries(sessions)
    return bool(rows) and all(d.status != "pending" for d in rows)


async def test_one_customers_events_arrive_in_order_while_others_go_on(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, worker: WebhookWorker, topic: str
) -> None:
    """A failing delivery holds back the later ones of its customer only."""
    slow, quick = uuid.uuid4(), uuid.uuid4()
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        receiver.script_for[str(slow)] = deque([503, 503, 503])  # slow's v1 fails three times
        rows = event_rows(topic, [slow, quick], 4)
        await queue(sessions, webhooks, rows)
        got = await receiver.wait_for(8)
    per_customer: dict[str, list[int]] = {}
    for r in got:
        per_customer.setdefault(r.event["subject"], []).append(r.event["data"]["version"])
    assert per_customer == {str(slow): [1, 2, 3, 4], str(quick): [1, 2, 3, 4]}
    # The other customer did not wait: all its events were in before the first customer's v2.
    order = [(r.event["subject"], r.event["data"]["version"]) for r in got]
    assert order.index((str(quick), 4)) < order.index((str(slow), 2))
    assert len(receiver.received) == 11  # 8 events + 3 failed attempts, nothing twice


async def test_only_a_customers_first_pending_delivery_is_due_and_finishing_it_makes_the_next_due(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    """The others wait without a due time (so a round never reads them), within one fan-out and
    across fan-outs; each one finished, succeeded or given up, gives the next its time."""
    ada, bob = uuid.uuid4(), uuid.uuid4()
    worker = WebhookWorker(webhooks, sessions)
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        receiver.script_for[str(ada)] = deque([400, 503])  # ada's v1 is given up, v2 is retried
        await queue(sessions, webhooks, event_rows(topic, [ada, bob], 2))
        await queue(sessions, webhooks, event_rows(topic, [ada], 1)[:1])

        def due(rows: list[Any]) -> list[tuple[str, bool]]:
            return [(("ada" if d.ordering_key == str(ada) else "bob"), d.next_attempt_at is not None) for d in rows]

        assert due(await deliveries(sessions)) == [("ada", True), ("bob", True), ("ada", False), ("bob", False), ("ada", False)]
        try:
            assert await worker.deliver_once() == 2  # the two heads
            rows = await deliveries(sessions)
            assert [d.status for d in rows] == ["failed", "succeeded", "pending", "pending", "pending"]
            assert due(rows[2:]) == [("ada", True), ("bob", True), ("ada", False)]
            assert await worker.deliver_once() == 2  # ada's v2 fails and waits for a retry; bob's v2
            rows = await deliveries(sessions)
            assert [d.status for d in rows] == ["failed", "succeeded", "pending", "succeeded", "pending"]
            assert due(rows[4:]) == [("ada", False)]  # still behind ada's v2
            assert await worker.sweep() == 0  # nothing is left without a time that should have one
        finally:
            await worker.stop()


async def test_a_delivery_queued_while_its_customers_head_is_being_sent_is_due_at_once(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str, kit_engine: AsyncEngine
) -> None:
    """The round sending the head may be finishing it in a transaction that cannot see the new
    delivery, so it would not give it a time: the new one is due at once (and the claim keeps
    it behind the head). Behind a head that is not being sent, it waits."""
    ada = uuid.uuid4()
    table = WebhookDelivery.__tablename__
    rows = event_rows(topic, [ada], 3)
    await subscribe(sessions, webhooks, "http://127.0.0.1:9/hook")
    await queue(sessions, webhooks, rows[:1])
    [head] = await deliveries(sessions)
    async with kit_engine.connect() as round_sending:  # a worker round holds its claim on the head
        await round_sending.execute(text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE"), {"id": head.id})
        await queue(sessions, webhooks, rows[1:2])
        await round_sending.rollback()
    await queue(sessions, webhooks, rows[2:])
    _, second, third = await deliveries(sessions)
    assert second.next_attempt_at is not None
    assert third.next_attempt_at is None


async def test_the_sweep_gives_a_time_to_a_queue_head_left_without_one(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    """A fan-out that saw a customer's delivery pending, while another transaction was finishing
    it, queues the next without a time, and no one releases it: the sweep does."""
    ada = uuid.uuid4()
    worker = WebhookWorker(webhooks, sessions)
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        await queue(sessions, webhooks, event_rows(topic, [ada], 2))
        first, _ = await deliveries(sessions)
        async with sessions() as session, session.begin():  # finished elsewhere, its next not released
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == first.id).values(status="succeeded", next_attempt_at=None)
            )
        try:
            assert await worker.deliver_once() == 0
            assert await worker.sweep() == 1
            assert await worker.deliver_once() == 1
        finally:
            await worker.stop()
    assert [r.event["data"]["version"] for r in receiver.accepted] == [2]


async def test_a_round_reads_the_due_deliveries_only_however_long_the_queues_behind_failing_ones(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str, kit_engine: AsyncEngine
) -> None:
    """200 customers with 10 events each, whose first delivery waits for a retry, and 3 with
    one event each: the claim reads those 3 due rows, not the 1,800 queued behind the others
    (walking such queues took 235 ms a round at 100,000)."""
    worker = WebhookWorker(webhooks, sessions)
    table = WebhookDelivery.__tablename__
    waiting, ready = [uuid.uuid4() for _ in range(200)], [uuid.uuid4() for _ in range(3)]
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        await queue(sessions, webhooks, event_rows(topic, waiting, 10))
        async with kit_engine.begin() as conn:  # as after a failed first attempt: retried in 10 minutes
            await conn.execute(
                text(
                    f"UPDATE {table} SET attempts = 1, next_attempt_at = now() + interval '10 min' WHERE seq IN "
                    f"(SELECT min(seq) FROM {table} WHERE status = 'pending' GROUP BY ordering_key)"
                )
            )
        await queue(sessions, webhooks, event_rows(topic, ready, 1))
        async with kit_engine.begin() as conn:
            await conn.execute(text(f"ANALYZE {table}"))
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            doc = await driver.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {worker.claim_sql}", utcnow(), 100)

        def read_from_d(plan: dict[str, Any]) -> int:
            own = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0) if plan.get("Alias") == "d" else 0
            return own + sum(read_from_d(child) for child in plan.get("Plans", []))

        plan = doc[0]["Plan"] if isinstance(doc, list) else orjson.loads(doc)[0]["Plan"]
        assert read_from_d(plan) <= 3, plan
        try:
            assert await worker.deliver_once() == 3
        finally:
            await worker.stop()
    assert {r.event["subject"] for r in receiver.accepted} == {str(c) for c in ready}


async def test_the_delivery_log_and_manual_retry_keep_the_webhook_id(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, worker: WebhookWorker, topic: str
) -> None:
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        receiver.script.append(400)
        [row] = event_rows(topic, [uuid.uuid4()], 1)
        await queue(sessions, webhooks, [row])
        await eventually(lambda: _all_finished(sessions))
        [d] = await deliveries(sessions)
        assert (d.status, d.last_status_code) == ("failed", 400)
        assert d.last_error.startswith("HTTP 400") and d.last_duration_ms is not None
        async with sessions() as session, session.begin():
            retried = await service.retry_delivery(session, webhooks, sub.id, d.id)
            assert (retried.status, retried.next_attempt_at is not None) == ("pending", True)
        webhooks.wake_worker()
        await receiver.wait_for(1)
        await eventually(lambda: _all_finished(sessions))
    [d] = await deliveries(sessions)
    assert (d.status, d.attempts, [a["status_code"] for a in d.attempt_log]) == ("succeeded", 2, [400, 200])
    assert [r.webhook_id for r in receiver.received] == [str(row["event_id"])] * 2


async def test_no_subscription_queues_nothing(sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str) -> None:
    """With no subscription (or none matching) the fan-out writes nothing, and within the cache
    time it does not even ask the database."""
    webhooks.settings = webhooks.settings.model_copy(update={"webhook_subscription_cache_seconds": 60})
    fanout = WebhookFanout(webhooks)
    rows = event_rows(topic, [uuid.uuid4()], 2)
    async with sessions() as session, session.begin():
        conn = await session_connection(session)
        assert await fanout.add(conn, rows) == 0
    async with sessions() as session, session.begin():
        # A connection that fails any statement: the cached answer (no subscriptions) is used.
        assert await fanout.add(_NoQueries(), rows) == 0
    assert await deliveries(sessions) == []


class _NoQueries:
    async def fetch(self, *args: Any) -> Any:
        raise AssertionError("the fan-out queried the database")

    execute = fetch


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "127.0.0.1",
        "169.254.169.254",
        "192.168.1.1",
        "172.16.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        # IPv4 carried in IPv6, which a gateway on the way translates: 6to4, NAT64, IPv4-compatible.
        "2002:a9fe:a9fe::",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::10.0.0.1",
        "::7f00:1",
        "64:ff9b:1::a00:1",  # NAT64's local-use prefix (RFC 8215): whatever it carries
    ],
)
def test_private_loopback_and_link_local_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "2002:5db8:d822::", "64:ff9b::93.184.216.34"])
def test_public_addresses_stay_public_in_every_form(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


async def test_the_ssrf_guard_refuses_private_targets_unless_allowed() -> None:
    for url in (
        "http://10.0.0.5/x",
        "http://127.0.0.1:8080/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://localhost/",
    ):
        with pytest.raises(TargetRefused):
            await check_target(url, allow_private=False)
        await check_target(url, allow_private=True)
    await check_target("https://93.184.216.34/hook", allow_private=False)  # a public address
    for url in ("ftp://example.com/", "http://user:pw@example.com/", "http:///nohost", "http://[v1.fe]/", "http://☃.net/hook"):
        with pytest.raises(TargetRefused):
            await check_target(url, allow_private=True)


async def test_the_worker_refuses_a_private_target_when_sending(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    """Checked again before each delivery (a hostname may resolve elsewhere by then): no request
    leaves, and the delivery is given up with the reason."""
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        webhooks.settings = webhooks.settings.model_copy(update={"webhook_allow_private_targets": False})
        assert await one_round(webhooks, sessions) == 1
    [d] = await deliveries(sessions)
    assert d.status == "failed" and "private" in d.last_error and d.last_status_code is None
    assert receiver.received == []
    assert sub.enabled


async def test_a_delivery_connects_to_the_address_the_guard_checked_not_to_a_second_lookup(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: when the guard looks `localhost` up it gets a public address (the guard's
    cached answer, set here); a second lookup, by the OS, would give 127.0.0.1, where the
    receiver listens. The request must go to the address that was checked, so it never reaches
    the receiver. Connections other than to loopback are refused here without touching the
    network."""
    checked = "93.184.216.34"
    connected_to: list[str] = []
    real_connect = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self: Any, host: str, port: int, **kwargs: Any) -> Any:
        connected_to.append(host)
        if host not in ("localhost", "127.0.0.1"):
            raise httpcore.ConnectError(f"{host} is not reachable from this test")
        return await real_connect(self, host, port, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    async with WebhookReceiver() as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        expiry = time.monotonic() + 600
        monkeypatch.setitem(targets._resolved, ("localhost", receiver.port), (expiry, [ipaddress.ip_address(checked)]))
        webhooks.settings = webhooks.settings.model_copy(update={"webhook_allow_private_targets": False})
        sub = await subscribe(sessions, webhooks, url)
        receiver.secret = sub.secret
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        assert await one_round(webhooks, sessions) == 1
    assert receiver.received == []
    assert connected_to == [checked]
    [d] = await deliveries(sessions)
    assert d.status == "pending" and "not reachable from this test" in d.last_error  # retried later, as any connect error

    # And an answer that is private by the time of the connection is refused there too.
    monkeypatch.setitem(targets._resolved, ("rebound.example", 443), (expiry, [ipaddress.ip_address("10.0.0.7")]))
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.7"):
        await targets.PinnedBackend().connect_tcp("rebound.example", 443)
    assert connected_to == [checked]


async def test_deliveries_go_through_the_configured_proxy_and_the_guard_still_checks_each_target(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    """`webhook_proxy_url`: for a network whose way out is an egress proxy. The delivery goes to
    the proxy, which connects to the receiver; the target is still checked before each
    delivery, so a private one is refused before the proxy hears of it."""
    customers = [uuid.uuid4(), uuid.uuid4()]
    async with WebhookReceiver() as receiver, ForwardProxy() as proxy:
        webhooks.settings = webhooks.settings.model_copy(update={"webhook_proxy_url": proxy.url})
        sub = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = sub.secret
        await queue(sessions, webhooks, event_rows(topic, customers[:1], 1))
        worker = WebhookWorker(webhooks, sessions)
        try:
            assert await worker.deliver_once() == 1
            [received] = receiver.accepted  # signed as ever: the receiver verified it
            assert received.event["subject"] == str(customers[0])
            assert proxy.requests == [f"POST {receiver.url} HTTP/1.1"]

            # Private targets refused again: the guard refuses the loopback receiver, proxy or not.
            webhooks.settings = webhooks.settings.model_copy(update={"webhook_allow_private_targets": False})
            worker.settings = webhooks.settings
            await queue(sessions, webhooks, event_rows(topic, customers[1:], 1))
            assert await worker.deliver_once() == 1
        finally:
            await worker.stop()
    assert len(proxy.requests) == 1 and len(receiver.received) == 1
    refused = [d for d in await deliveries(sessions) if d.status == "failed"]
    assert len(refused) == 1 and "private" in refused[0].last_error


async def test_where_only_the_proxy_resolves_names_they_are_judged_by_form_and_the_proxy_connects(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str
) -> None:
    """WEBHOOK_PROXY_RESOLVES: a name this machine cannot resolve (`.test`) is not looked up:
    the subscription is taken and the delivery goes through the proxy, which resolves it. Names
    local by their form and literal private addresses are still refused."""
    customer = uuid.uuid4()
    async with WebhookReceiver() as receiver, ForwardProxy(hosts={"hooks.partner.test": "127.0.0.1"}) as proxy:
        target = f"http://hooks.partner.test:{receiver.port}/hook"
        strict = webhooks.settings.model_copy(update={"webhook_allow_private_targets": False, "webhook_proxy_url": proxy.url})
        webhooks.settings = strict
        with pytest.raises(Unprocessable) as unresolved:  # resolved here, as without the setting
            await subscribe(sessions, webhooks, target)
        assert "does not resolve" in str(unresolved.value.detail)

        webhooks.settings = strict.model_copy(update={"webhook_proxy_resolves": True})
        for local in ("http://localhost:8080/", "http://metadata/computeMetadata", "http://db.internal/",
                      "http://printer.local/", "http://127.0.0.1:9/", "http://[::1]/", "http://10.0.0.5/",
                      # the forms a resolver reads as an IPv4 address
                      "http://127.1/", "http://0x7f.0.0.1/", "http://0177.0.0.1/", "http://10.0.0.5./",
                      "http://169.254.169.254./latest/meta-data/", "http://2130706433/"):  # fmt: skip
            with pytest.raises(Unprocessable) as refused:
                await subscribe(sessions, webhooks, local)
            assert "public addresses" in str(refused.value.detail) or "URL is not valid" in str(refused.value.detail), local
        sub = await subscribe(sessions, webhooks, target)
        receiver.secret = sub.secret
        await queue(sessions, webhooks, event_rows(topic, [customer], 1))
        assert await one_round(webhooks, sessions) == 1
        [received] = receiver.accepted
        assert received.event["subject"] == str(customer)
        assert proxy.requests == [f"POST {target} HTTP/1.1"]


def test_proxy_resolves_needs_a_proxy() -> None:
    with pytest.raises(ValidationError, match="needs WEBHOOK_PROXY_URL"):
        ServiceSettings(webhook_proxy_resolves=True)
    assert ServiceSettings(webhook_proxy_resolves=True, webhook_proxy_url="http://egress.internal:3128").webhook_proxy_resolves


@pytest.mark.parametrize("url", ["ftp://egress:21", "egress.internal:3128", "http://", "http://egress:port", "http://egress/x"])
def test_a_proxy_url_that_is_not_one_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValidationError, match="not a proxy URL"):
        ServiceSettings(webhook_proxy_url=url)
    assert ServiceSettings(webhook_proxy_url="").webhook_proxy_url is None
    assert ServiceSettings(webhook_proxy_url="http://egress.internal:3128").webhook_proxy_url == "http://egress.internal:3128"


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempts, full in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)):
        waits = {backoff_seconds(attempts, 1.0, 60.0) for _ in range(50)}
        assert all(full / 2 <= w <= full for w in waits)
        assert len(waits) > 1  # jittered


async def test_a_ping_is_a_signed_test_delivery_sent_once_that_never_counts_against_the_webhook(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, worker: WebhookWorker, topic: str
) -> None:
    """`webhook.ping` goes to a webhook whatever its event types, ahead of a customer's queue
    stuck behind a failing event, verified with its secret; a failed ping is not retried and
    does not count towards disabling the webhook; a disabled webhook cannot be pinged."""

    async def ping(sub_id: uuid.UUID) -> Any:
        async with sessions() as session, session.begin():
            delivery = await service.ping(session, webhooks, sub_id)
        webhooks.wake_worker()
        return delivery

    async def finished(delivery_id: uuid.UUID) -> Any:
        async def done() -> Any:
            row = next(d for d in await deliveries(sessions) if d.id == delivery_id)
            return row if row.status != "pending" else None

        return await eventually(done)

    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url, event_types=["customer.created"])
        receiver.secret = sub.secret
        customer = uuid.uuid4()
        receiver.script_for[str(customer)] = deque([503] * 50)  # this customer's queue is stuck
        await queue(sessions, webhooks, event_rows(topic, [customer], 1, "customer.created"))
        await eventually(lambda: _received(receiver, 1))

        delivery = await ping(sub.id)
        assert (delivery.event_type, delivery.status, delivery.ordering_key) == ("webhook.ping", "pending", delivery.webhook_id)
        done = await finished(delivery.id)
        assert (done.status, done.attempts, done.last_status_code) == ("succeeded", 1, 200)
        [pinged] = [r for r in receiver.received if r.event["type"] == "webhook.ping"]
        assert pinged.webhook_id == delivery.webhook_id and pinged.event["data"]["webhook"] == str(sub.id)
        assert pinged.event["source"] == f"urn:cx:{webhooks.settings.service_name}" and receiver.bad_signatures == 0

        receiver.script_for.clear()  # the customer's event goes through at its next retry
        [stuck] = [d for d in await deliveries(sessions) if d.event_type == "customer.created"]
        assert (await finished(stuck.id)).status == "succeeded"
        assert (await subscription(sessions, sub.id)).consecutive_failures == 0

        receiver.script.extend([500] * 3)  # the next pings fail: once each, and count for nothing
        failing = [await ping(sub.id) for _ in range(3)]
        for delivery in failing:
            done = await finished(delivery.id)
            assert (done.status, done.attempts, done.last_status_code) == ("failed", 1, 500)
        now = await subscription(sessions, sub.id)
        assert (now.enabled, now.consecutive_failures) == (True, 0)

        receiver.script.append(500)  # sent again by hand: once more, still not retried
        async with sessions() as session, session.begin():
            await service.retry_delivery(session, webhooks, sub.id, failing[0].id)
        webhooks.wake_worker()
        done = await finished(failing[0].id)
        assert (done.status, done.attempts, [a["status_code"] for a in done.attempt_log]) == ("failed", 2, [500, 500])

        async with sessions() as session, session.begin():
            await service.update_subscription(session, webhooks, sub.id, WebhookUpdate(enabled=False), None)
        with pytest.raises(Conflict, match="disabled"):
            await ping(sub.id)
        with pytest.raises(NotFound):
            await ping(uuid.uuid4())


async def _received(receiver: WebhookReceiver, count: int) -> bool:
    return len(receiver.received) >= count


async def _redirect_to(sessions: async_sessionmaker[AsyncSession], subscription_id: uuid.UUID, url: str) -> None:
    """Point a subscription at `url` behind the API's back (one saved before a rule existed)."""
    async with sessions() as session, session.begin():
        await session.execute(update(WebhookSubscription).where(WebhookSubscription.id == subscription_id).values(url=url))


async def test_one_deliverys_failure_of_any_kind_never_undoes_the_rounds_other_outcomes(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL httpx cannot send to (an IPv6 literal it refuses, saved before the guard checked
    for it), and an error nobody foresaw, end their own delivery: the other deliveries of the
    round are recorded as sent, not sent again by every later round."""
    async with WebhookReceiver() as receiver:
        good = await subscribe(sessions, webhooks, receiver.url)
        receiver.secret = good.secret
        broken = await subscribe(sessions, webhooks, receiver.url)
        surprising = await subscribe(sessions, webhooks, receiver.url.replace("127.0.0.1", "localhost"))
        await _redirect_to(sessions, broken.id, "http://[v1.fe]/hook")
        real_check = targets.check_target

        async def check_target(url: str, **kwargs: Any) -> None:
            if "localhost" in url:
                raise RuntimeError("a bug")
            await real_check(url, **kwargs)

        monkeypatch.setattr("cxkit.webhooks.delivery.check_target", check_target)
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        worker = WebhookWorker(webhooks, sessions)
        try:
            assert await worker.deliver_once() == 3
            assert await worker.deliver_once() == 0  # the bug's delivery waits for its retry
        finally:
            await worker.stop()
    by_subscription = {d.subscription_id: d for d in await deliveries(sessions)}
    assert by_subscription[good.id].status == "succeeded" and len(receiver.received) == 1
    refused = by_subscription[broken.id]
    assert refused.status == "failed" and refused.last_error.startswith("the URL is not valid")
    retried = by_subscription[surprising.id]
    assert (retried.status, retried.last_error) == ("pending", "RuntimeError: a bug") and retried.next_attempt_at is not None


async def test_a_host_that_does_not_resolve_when_sending_is_retried(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS failing for a while (a lookup error, no answer in time) is retried like a connection
    error, not given up as a private target would be."""
    async with WebhookReceiver() as receiver:
        sub = await subscribe(sessions, webhooks, receiver.url)
    await _redirect_to(sessions, sub.id, "http://hooks.example.com/hook")
    expiry = time.monotonic() + 600
    monkeypatch.setitem(targets._resolved, ("hooks.example.com", 80), (expiry, "Temporary failure in name resolution"))
    webhooks.settings = webhooks.settings.model_copy(update={"webhook_allow_private_targets": False})
    await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
    assert await one_round(webhooks, sessions) == 1
    [d] = await deliveries(sessions)
    assert (d.status, d.last_status_code) == ("pending", None) and d.next_attempt_at is not None
    assert d.last_error == "the host hooks.example.com does not resolve (Temporary failure in name resolution)"
    assert (await subscription(sessions, sub.id)).consecutive_failures == 1


class RawReceiver:
    """A receiver that answers at its own pace: `head` is sent `pace` seconds per byte, then
    `body` in 64 KiB pieces, each `pace` seconds apart; `sent` counts the body bytes written
    before the client hung up."""

    def __init__(self, head: bytes, body_bytes: int, *, pace: float = 0.0, head_pace: float = 0.0) -> None:
        self.head, self.body_bytes, self.pace, self.head_pace = head, body_bytes, pace, head_pace
        self.sent = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            for i in range(len(self.head)):
                writer.write(self.head[i : i + 1] if self.head_pace else self.head[i:])
                await writer.drain()
                if not self.head_pace:
                    break
                await asyncio.sleep(self.head_pace)
            piece = b"x" * 65536
            while self.sent < self.body_bytes:
                writer.write(piece[: self.body_bytes - self.sent])
                await writer.drain()
                self.sent += min(len(piece), self.body_bytes - self.sent)
                await asyncio.sleep(self.pace)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize(
    ("receiver", "error"),
    [
        pytest.param(
            RawReceiver(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 268435456\r\n\r\n", 268_435_456),
            "HTTP 500: " + "x" * 200,
            id="a 256 MiB error body",
        ),
        pytest.param(
            RawReceiver(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 50000000\r\n\r\n", 50_000_000, pace=0.1),
            "HTTP 503: " + "x" * 200,
            id="a body dripping 64 KiB every 0.1 s",
        ),
        pytest.param(
            RawReceiver(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, head_pace=0.1),
            "no answer within 0.5 s",
            id="a status line dripping a byte every 0.1 s",
        ),
    ],
)
async def test_an_attempt_reads_a_status_and_the_start_of_a_body_within_the_timeout(
    sessions: async_sessionmaker[AsyncSession], webhooks: Webhooks, topic: str, receiver: RawReceiver, error: str
) -> None:
    """WEBHOOK_TIMEOUT_SECONDS (0.5 here) bounds the whole attempt, and no more of a failure's
    body is read than its error shows: a receiver flooding or dripping its answer holds neither
    the round (and its other deliveries) nor the worker's memory."""
    async with receiver as url:
        await subscribe(sessions, webhooks, url)
        await queue(sessions, webhooks, event_rows(topic, [uuid.uuid4()], 1))
        started = time.monotonic()
        assert await asyncio.wait_for(one_round(webhooks, sessions), 10) == 1
        took = time.monotonic() - started
    [d] = await deliveries(sessions)
    assert d.status == "pending" and d.last_error == error
    assert took < 3 and d.last_duration_ms < 1500
    assert receiver.sent < 16 * 1024 * 1024  # the rest of the answer was never asked for
