"""crm-service app factory (`uvicorn --factory crm.main:create_app`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import crm
from crm.campaigns.router import router as campaigns_router
from crm.config import CRMSettings
from crm.consumers import cem_feedback, interactions
from crm.customer_data import other_domains
from crm.customer_view.router import router as customer_view_router
from crm.customers.router import router as customers_router
from crm.dashboard.router import router as dashboard_router
from crm.db import SOURCE, ApiKey, IdempotencyKey, OutboxMessage, ProcessedEvent, WebhookDelivery, WebhookSubscription
from crm.deals.router import router as deals_router
from crm.documents.links import LinkSigner
from crm.documents.router import router as documents_router
from crm.documents.router import shared_router as shared_documents_router
from crm.funnel.router import router as funnel_router
from crm.imports.router import router as imports_router
from crm.imports.worker import ImportWorker
from crm.interactions.router import router as interactions_router
from crm.leads.router import router as leads_router
from crm.pipelines.router import router as pipelines_router
from crm.tasks.router import router as tasks_router
from crm.tasks.service import run_reminders
from cxkit.dashboard.pages import install_dashboard
from cxkit.events.registry import CEM_FEEDBACK, CRM_CUSTOMERS, CX_INTERACTIONS, event_types_on
from cxkit.http.app import install_platform
from cxkit.http.routing import include_routers
from cxkit.kafka.consumer import EventConsumer
from cxkit.logs import configure_logging
from cxkit.service_app import service_lifespan
from cxkit.tracing import configure_tracing, fastapi_telemetry
from cxkit.webhooks.delivery import Webhooks
from cxkit.webhooks.router import webhooks_router

DESCRIPTION = """
The company's view of the customer: customers, leads, the sales funnel (pipelines, deals),
interactions, follow-up tasks, campaigns and documents.

**Auth**: `Authorization: Bearer <api key>`; scopes `read`, `write`, `admin` (pipeline set-up and
GDPR erasure need `admin`).
**Errors**: RFC 9457 `application/problem+json`.
**Lists**: `?limit=` (default 50, max 200) and the opaque `?cursor=` from `next_cursor`.
**Writes**: send `Idempotency-Key` to make retries safe; `PATCH` honours `If-Match`.
**Merged customers**: reading a duplicate that was merged answers 308 to its survivor.
Every change is announced on Kafka topic `crm.customers.v1` (CloudEvents 1.0); interactions
recorded here are published on `cx.interactions.v1`, and those other systems publish there are
consumed. What the CEM service reports on `cem.feedback.v1` (survey invitations and suppressions,
answers, feedback, follow-up requests) is kept locally: it fills the customer view's `experience`
and the timeline, and every follow-up request becomes a high-priority task for the customer's
owner (`origin` `followup`), whose completion the CEM service learns from `task.completed`.
**Webhooks** (`/v1/webhooks`, `admin`): every event announced here is also POSTed to the subscribed URLs,
signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), retried with backoff for
up to 24 h, each customer's in order; the delivery log shows every attempt.
"""


def build_consumers(settings: CRMSettings) -> Any:
    """The live consumers; `cem.feedback.v1` follow-up requests become tasks per `settings`."""

    def factory(session_factory: Any) -> list[EventConsumer]:
        return [
            EventConsumer(
                name=interactions.consumer_name(settings),
                topics=[CX_INTERACTIONS],
                handlers=interactions.live_handlers(),
                settings=settings,
                session_factory=session_factory,
                processed_model=ProcessedEvent,
                # Interactions recorded over HTTP here are stored before they are published.
                skip_sources=frozenset({SOURCE}),
            ),
            EventConsumer(
                name=cem_feedback.consumer_name(settings),
                topics=[CEM_FEEDBACK],
                handlers=cem_feedback.live_handlers(settings),
                settings=settings,
                session_factory=session_factory,
                processed_model=ProcessedEvent,
            ),
        ]

    return factory


def with_import_worker(settings: CRMSettings, base: Callable[[FastAPI], Any]) -> Callable[[FastAPI], Any]:
    """The service's lifespan, plus the worker that runs import jobs (`crm.imports.worker`) and
    the task reminders."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with base(app):
            app.state.import_worker = None
            async with _task_reminders(settings, app):
                if not settings.run_imports:
                    yield
                    return
                worker = ImportWorker(
                    settings.database_url,
                    writers=settings.imports_writers,
                    poll_seconds=settings.imports_poll_seconds,
                    retention_days=settings.imports_retention_days,
                )
                app.state.import_worker = worker
                task = asyncio.create_task(worker.run(), name="import-worker")
                try:
                    yield
                finally:
                    await worker.stop()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.wait_for(task, 30)

    return lifespan


@asynccontextmanager
async def _task_reminders(settings: CRMSettings, app: FastAPI) -> AsyncIterator[None]:
    """`task.overdue` announced beside the web process (`crm.tasks.service.run_reminders`)."""
    if not settings.run_task_reminders:
        yield
        return
    task = asyncio.create_task(
        run_reminders(app.state.session_factory, settings.task_reminders_interval_s), name="task-reminders"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(settings: CRMSettings | None = None) -> FastAPI:
    settings = settings or CRMSettings()
    produced = [CRM_CUSTOMERS, CX_INTERACTIONS]
    webhooks = Webhooks(WebhookSubscription, WebhookDelivery, event_types_on(produced), settings)
    configure_logging(settings.service_name, level=settings.log_level, json=settings.log_json)
    tracer_provider = configure_tracing(settings.service_name)
    app = FastAPI(
        # OpenTelemetry server spans (cxkit.tracing: recorded and exported only with an OTLP endpoint)
        telemetry=fastapi_telemetry(tracer_provider),
        title="crm-service",
        version=crm.__version__,
        description=DESCRIPTION,
        # /docs and /redoc come from install_platform, with their assets served here (no CDN).
        docs_url=None,
        redoc_url=None,
        lifespan=with_import_worker(
            settings,
            service_lifespan(
                settings,
                api_key_model=ApiKey,
                idempotency_model=IdempotencyKey,
                outbox_model=OutboxMessage,
                produced_topics=produced,
                consumers=build_consumers(settings),
                webhooks=webhooks,
                processed_model=ProcessedEvent,
            ),
        ),
    )
    app.state.settings = settings
    app.state.customer_other_domains = other_domains(settings)
    secret = settings.documents_signing_secret
    app.state.document_links = LinkSigner(secret.get_secret_value().encode() if secret else None)
    install_platform(app, settings.service_name)
    include_routers(
        app,
        (
            customers_router,
            customer_view_router,
            leads_router,
            pipelines_router,
            deals_router,
            funnel_router,
            interactions_router,
            tasks_router,
            campaigns_router,
            documents_router,
            shared_documents_router,
            webhooks_router(webhooks),
            imports_router,
        ),
        prefix="/v1",
    )
    install_dashboard(app, dashboard_router)  # /dashboard: sign in with an API key, the funnel as charts
    return app
