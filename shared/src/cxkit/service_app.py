"""The lifespan both services share: engine, sessions, auth, relay and consumers as tasks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import delete

from cxkit.db import make_engine, make_session_factory, utcnow
from cxkit.http.auth import ApiKeyAuth
from cxkit.http.ratelimit import RateLimits
from cxkit.kafka.consumer import EventConsumer, forget_processed_events
from cxkit.kafka.outbox import OutboxRelay
from cxkit.pg_pool import create_pg_pool
from cxkit.settings import ServiceSettings
from cxkit.tracing import instrument_engine, shutdown_tracing
from cxkit.webhooks.delivery import WebhookFanout, Webhooks, WebhookWorker

log = logging.getLogger(__name__)
HOUSEKEEPING_INTERVAL_S = 600
GC_GEN0_THRESHOLD = 20_000


async def housekeep(
    settings: ServiceSettings,
    session_factory: Any,
    outbox_model: type[Any],
    idempotency_model: type[Any],
    webhooks: Webhooks | None = None,
    processed_model: type[Any] | None = None,
) -> None:
    """Drop sent outbox rows, idempotency answers, finished webhook deliveries and the ids of
    applied events past their retention."""
    now = utcnow()
    async with session_factory() as session, session.begin():
        await session.execute(
            delete(outbox_model).where(
                outbox_model.sent_at.is_not(None),
                outbox_model.sent_at < now - dt.timedelta(hours=settings.outbox_retention_hours),
            )
        )
        await session.execute(
            delete(idempotency_model).where(
                idempotency_model.created_at < now - dt.timedelta(hours=settings.idempotency_ttl_hours)
            )
        )
        if webhooks is not None:
            deliveries = webhooks.delivery_model
            await session.execute(
                delete(deliveries).where(
                    deliveries.status != "pending",
                    deliveries.updated_at < now - dt.timedelta(days=settings.webhook_log_retention_days),
                )
            )
    if processed_model is not None:
        await forget_processed_events(
            session_factory, processed_model, now - dt.timedelta(days=settings.processed_events_retention_days)
        )


async def _housekeeping(settings: ServiceSettings, session_factory: Any, *models: Any) -> None:
    """`housekeep` every few minutes."""
    while True:
        try:
            await housekeep(settings, session_factory, *models)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("housekeeping failed", extra={"error": repr(exc)})
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)


def _settle_garbage_collector() -> None:
    """Move everything built at start-up (modules, routes, schemas) out of the collector's
    reach and collect the young generation less often: a request allocates a few hundred
    short-lived objects, and full collections over the start-up heap showed up as the slowest
    1% of requests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def service_lifespan(
    settings: ServiceSettings,
    *,
    api_key_model: type[Any],
    idempotency_model: type[Any],
    outbox_model: type[Any],
    produced_topics: list[str],
    consumers: Callable[[Any], list[EventConsumer]] | None = None,
    webhooks: Webhooks | None = None,
    processed_model: type[Any] | None = None,
) -> Callable[[FastAPI], Any]:
    """Builds the app's state on start-up; the broker may be down: relay and consumers
    retry in the background, so the HTTP API serves regardless. With `webhooks`, the relay
    queues a delivery per sent event and matching subscription, and a worker sends them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow)
        instrument_engine(engine)  # query spans, when spans are recorded (cxkit.tracing)
        session_factory = make_session_factory(engine)
        app.state.engine = engine
        app.state.session_factory = session_factory
        app.state.pg_pool = await create_pg_pool(
            settings.database_url, max_size=settings.db_pool_size, application_name=settings.service_name
        )
        app.state.auth = ApiKeyAuth(session_factory, api_key_model, ttl_s=settings.api_key_cache_seconds)
        app.state.rate_limits = RateLimits.from_settings(settings)
        app.state.idempotency_model = idempotency_model
        workers: list[Any] = []
        tasks: list[asyncio.Task[None]] = []
        app.state.webhooks = webhooks
        if settings.run_relay:
            fanout = WebhookFanout(webhooks) if webhooks is not None else None
            relay = OutboxRelay(settings, session_factory, outbox_model, produced_topics, on_sent=fanout)
            app.state.relay = relay
            workers.append(relay)
            tasks.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        if webhooks is not None and settings.run_webhook_worker:
            worker = WebhookWorker(webhooks, session_factory)
            app.state.webhook_worker = worker
            workers.append(worker)
            tasks.append(asyncio.create_task(worker.run(), name="webhook-worker"))
        app.state.consumers = []
        if settings.run_consumers and consumers is not None:
            for consumer in consumers(session_factory):
                app.state.consumers.append(consumer)
                workers.append(consumer)
                tasks.append(asyncio.create_task(consumer.run(), name=f"consumer-{consumer.name}"))
        tasks.append(
            asyncio.create_task(
                _housekeeping(settings, session_factory, outbox_model, idempotency_model, webhooks, processed_model),
                name="housekeeping",
            )
        )
        _settle_garbage_collector()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for worker in workers:
                with contextlib.suppress(Exception):
                    await worker.stop()
            await app.state.pg_pool.close()
            await engine.dispose()
            shutdown_tracing()
            if app.state.rate_limits is not None:
                with contextlib.suppress(Exception):
                    await app.state.rate_limits.close()

    return lifespan
