"""cem-service app factory (`uvicorn --factory cem.main:create_app`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

import cem
from cem.config import CEMSettings
from cem.consumers import crm_customers
from cem.customers.router import router as customers_router
from cem.db import ApiKey, IdempotencyKey, OutboxMessage, ProcessedEvent
from cem.touchpoints.router import router as touchpoints_router
from cxkit.events.registry import CEM_FEEDBACK, CRM_CUSTOMERS
from cxkit.http.app import install_platform
from cxkit.kafka.consumer import EventConsumer
from cxkit.logs import configure_logging
from cxkit.service_app import service_lifespan

DESCRIPTION = """
The customer's view of the company: touchpoints and journeys, surveys (NPS, CSAT, CES),
invitations, the respondent page, feedback and experience analytics.

**Auth**: `Authorization: Bearer <api key>`; scopes `read`, `write`, `admin`.
**Errors**: RFC 9457 `application/problem+json`.
**Lists**: `?limit=` (default 50, max 200) and the opaque `?cursor=` from `next_cursor`.
**Writes**: send `Idempotency-Key` to make retries safe; `PATCH` honours `If-Match`.
Keeps a local copy of CRM customers from `crm.customers.v1`, so it answers while the CRM is down.
"""


def build_consumers(settings: CEMSettings) -> Any:
    def factory(session_factory: Any) -> list[EventConsumer]:
        return [
            EventConsumer(
                name=f"{settings.consumer_group}.crm-customers",
                topics=[CRM_CUSTOMERS],
                handlers=dict(crm_customers.HANDLERS),
                settings=settings,
                session_factory=session_factory,
                processed_model=ProcessedEvent,
            )
        ]

    return factory


def create_app(settings: CEMSettings | None = None) -> FastAPI:
    settings = settings or CEMSettings()
    configure_logging(settings.service_name, level=settings.log_level, json=settings.log_json)
    app = FastAPI(
        title="cem-service",
        version=cem.__version__,
        description=DESCRIPTION,
        lifespan=service_lifespan(
            settings,
            api_key_model=ApiKey,
            idempotency_model=IdempotencyKey,
            outbox_model=OutboxMessage,
            produced_topics=[CEM_FEEDBACK],
            consumers=build_consumers(settings),
        ),
    )
    app.state.settings = settings
    install_platform(app, settings.service_name)
    app.include_router(touchpoints_router, prefix="/v1")
    app.include_router(customers_router, prefix="/v1")
    return app
