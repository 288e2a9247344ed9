"""cem-service app factory (`uvicorn --factory cem.main:create_app`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import cem
from cem.analytics.router import router as analytics_router
from cem.analytics.router import survey_results_router
from cem.config import CEMSettings
from cem.consumers import crm_customers, interactions
from cem.customer_data import customer_data
from cem.customer_view.router import router as customer_view_router
from cem.customers.lifecycle import CustomerErasure
from cem.dashboard.router import router as dashboard_router
from cem.db import ApiKey, IdempotencyKey, OutboxMessage, ProcessedEvent, WebhookDelivery, WebhookSubscription
from cem.feedback.router import router as feedback_router
from cem.feedback.sentiment import analyzer
from cem.followups.router import router as followups_router
from cem.invitations.router import router as invitations_router
from cem.journeys.router import router as journeys_router
from cem.respondent.router import preview_router as survey_preview_router
from cem.respondent.router import router as respondent_router
from cem.responses.router import router as responses_router
from cem.responses.service import LateFollowups
from cem.scheduler import InvitationScheduler
from cem.suppressions.router import opt_outs_router
from cem.suppressions.router import router as suppressions_router
from cem.surveys.router import router as surveys_router
from cem.touchpoints.router import router as touchpoints_router
from cxkit.dashboard.pages import install_dashboard
from cxkit.events.registry import CEM_FEEDBACK, CRM_CUSTOMERS, CX_INTERACTIONS, event_types_on
from cxkit.http.app import install_platform
from cxkit.http.routing import include_routers
from cxkit.kafka.consumer import EventConsumer
from cxkit.lifecycle import CustomerDataRegistry
from cxkit.logs import configure_logging
from cxkit.service_app import service_lifespan
from cxkit.tracing import configure_tracing, fastapi_telemetry
from cxkit.webhooks.delivery import Webhooks
from cxkit.webhooks.router import webhooks_router

DESCRIPTION = """
The customer's view of the company: touchpoints and journeys, surveys (NPS, CSAT, CES),
invitations, the respondent page, feedback and experience analytics.

**Auth**: `Authorization: Bearer <api key>`; scopes `read`, `write`, `admin`.
**Errors**: RFC 9457 `application/problem+json`.
**Lists**: `?limit=` (default 50, max 200) and the opaque `?cursor=` from `next_cursor`.
**Writes**: send `Idempotency-Key` to make retries safe; `PATCH` honours `If-Match`.
**Respondent page**: `/r/{token}` (no key: the invitation's token is the secret) serves plain HTML forms.
**Scores**: NPS 0-10, CSAT 1-5, CES 1-7 where 1 = very difficult and 7 = very easy; every score is stored
with its scale. Detractors (NPS 0-6, CSAT 1-2, CES 1-2) raise `followup.requested` for the CRM; when the CRM
reports the follow-up task done, the follow-up closes and counts in the recovery rate.
**Events**: keeps a local copy of CRM customers from `crm.customers.v1` (merges and erasures included), so it
answers while the CRM is down; hears interactions on `cx.interactions.v1` and invites to the surveys whose
trigger they match, within the throttle, fatigue and opt-out rules (a suppressed invitation is recorded and
announced as `survey.throttled`).
**Webhooks** (`/v1/webhooks`, `admin`): every event announced here is also POSTed to the subscribed URLs,
signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), retried with backoff for
up to 24 h, each customer's in order; the delivery log shows every attempt.
"""


def build_consumers(settings: CEMSettings, customer_data: CustomerDataRegistry[CustomerErasure]) -> Any:
    """The live consumers; merges and erasures on `crm.customers.v1` walk `customer_data`."""

    def factory(session_factory: Any) -> list[EventConsumer]:
        return [
            EventConsumer(
                name=crm_customers.consumer_name(settings),
                topics=[CRM_CUSTOMERS],
                handlers=crm_customers.live_handlers(customer_data),
                settings=settings,
                session_factory=session_factory,
                processed_model=ProcessedEvent,
            ),
            EventConsumer(
                name=interactions.consumer_name(settings),
                topics=[CX_INTERACTIONS],
                handlers=interactions.live_handlers(settings),
                settings=settings,
                session_factory=session_factory,
                processed_model=ProcessedEvent,
            ),
        ]

    return factory


def with_scheduler(settings: CEMSettings, lifespan: Callable[[FastAPI], Any]) -> Callable[[FastAPI], Any]:
    """The platform lifespan plus the invitation scheduler as a task beside the relay and the
    consumers (when `CEM_RUN_SCHEDULER` is on)."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            task = None
            if settings.run_scheduler:
                app.state.scheduler = InvitationScheduler(settings, app.state.session_factory)
                task = asyncio.create_task(app.state.scheduler.run(), name="invitation-scheduler")
            try:
                yield
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    return run


def create_app(settings: CEMSettings | None = None) -> FastAPI:
    settings = settings or CEMSettings()
    owners = customer_data(
        LateFollowups(dt.timedelta(hours=settings.followup_link_window_hours), settings.followup_sla)
        if settings.followup_link_window_hours > 0
        else None
    )
    webhooks = Webhooks(WebhookSubscription, WebhookDelivery, event_types_on([CEM_FEEDBACK]), settings)
    configure_logging(settings.service_name, level=settings.log_level, json=settings.log_json)
    tracer_provider = configure_tracing(settings.service_name)
    app = FastAPI(
        # OpenTelemetry server spans (cxkit.tracing: recorded and exported only with an OTLP endpoint)
        telemetry=fastapi_telemetry(tracer_provider),
        title="cem-service",
        version=cem.__version__,
        description=DESCRIPTION,
        # /docs and /redoc come from install_platform, with their assets served here (no CDN).
        docs_url=None,
        redoc_url=None,
        lifespan=with_scheduler(
            settings,
            service_lifespan(
                settings,
                api_key_model=ApiKey,
                idempotency_model=IdempotencyKey,
                outbox_model=OutboxMessage,
                produced_topics=[CEM_FEEDBACK],
                consumers=build_consumers(settings, owners),
                webhooks=webhooks,
                processed_model=ProcessedEvent,
            ),
        ),
    )
    app.state.settings = settings
    # The registry merges and erasures walk, for whatever applies one in this process (tests too).
    app.state.customer_data = owners
    install_platform(app, settings.service_name)
    include_routers(
        app,
        (
            touchpoints_router,
            journeys_router,
            surveys_router,
            survey_preview_router,
            survey_results_router,
            invitations_router,
            responses_router,
            feedback_router,
            followups_router,
            analytics_router,
            suppressions_router,
            opt_outs_router,
            customer_view_router,
            webhooks_router(webhooks),
        ),
        prefix="/v1",
    )
    include_routers(app, [respondent_router])
    install_dashboard(app, dashboard_router)  # /dashboard: sign in with an API key, charts of the analytics above
    analyzer()  # load the sentiment lexicon now rather than on the first feedback
    return app
