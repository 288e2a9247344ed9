"""crm-service app factory (`uvicorn --factory crm.main:create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

import crm
from crm.config import CRMSettings
from crm.customers.router import router as customers_router
from crm.db import ApiKey, IdempotencyKey, OutboxMessage
from cxkit.events.registry import CRM_CUSTOMERS, CX_INTERACTIONS
from cxkit.http.app import install_platform
from cxkit.logs import configure_logging
from cxkit.service_app import service_lifespan

DESCRIPTION = """
The company's view of the customer: customers, leads, the sales funnel (pipelines, deals),
interactions, follow-up tasks, campaigns and documents.

**Auth**: `Authorization: Bearer <api key>`; scopes `read`, `write`, `admin`.
**Errors**: RFC 9457 `application/problem+json`.
**Lists**: `?limit=` (default 50, max 200) and the opaque `?cursor=` from `next_cursor`.
**Writes**: send `Idempotency-Key` to make retries safe; `PATCH` honours `If-Match`.
Every change is announced on Kafka topic `crm.customers.v1` (CloudEvents 1.0).
"""


def create_app(settings: CRMSettings | None = None) -> FastAPI:
    settings = settings or CRMSettings()
    configure_logging(settings.service_name, level=settings.log_level, json=settings.log_json)
    app = FastAPI(
        title="crm-service",
        version=crm.__version__,
        description=DESCRIPTION,
        lifespan=service_lifespan(
            settings,
            api_key_model=ApiKey,
            idempotency_model=IdempotencyKey,
            outbox_model=OutboxMessage,
            produced_topics=[CRM_CUSTOMERS, CX_INTERACTIONS],
            consumers=None,
        ),
    )
    app.state.settings = settings
    install_platform(app, settings.service_name)
    app.include_router(customers_router, prefix="/v1")
    return app
