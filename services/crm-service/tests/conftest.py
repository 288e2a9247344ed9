"""crm-service fixtures: a migrated PostgreSQL database per run, the app in-process,
tables truncated after every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from crm.cli import ALEMBIC_INI
from crm.config import CRMSettings
from crm.db import ApiKey
from crm.main import create_app
from crm.models import Base
from cxkit import testing
from cxkit.dev_broker import DevBroker


@pytest.fixture(scope="session")
async def crm_database_url() -> AsyncIterator[str]:
    name, url = await testing.migrated_database("crm_test", ALEMBIC_INI)
    yield url
    await testing.drop_database(name)


@pytest.fixture(scope="session")
def crm_settings(crm_database_url: str, broker: DevBroker, tmp_path_factory: pytest.TempPathFactory) -> CRMSettings:
    return CRMSettings(
        database_url=crm_database_url,
        kafka_bootstrap_servers=broker.bootstrap,
        kafka_enable_idempotence=False,
        run_relay=False,
        run_consumers=False,
        log_json=False,
        documents_dir=str(tmp_path_factory.mktemp("documents")),
    )


@pytest.fixture(scope="session")
async def crm_app(crm_settings: CRMSettings) -> AsyncIterator[FastAPI]:
    app = create_app(crm_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="session")
async def keys(crm_app: FastAPI) -> dict[str, str]:
    return await testing.make_keys(crm_app.state.session_factory, ApiKey)


@pytest.fixture
async def client(crm_app: FastAPI, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """An admin-key client over the app; every table but api_keys is emptied afterwards."""
    transport = httpx.ASGITransport(app=crm_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crm", headers=testing.bearer(keys["admin"])) as c:
        yield c
    await testing.truncate_all(crm_app.state.engine, Base.metadata)


@pytest.fixture
def session_factory(crm_app: FastAPI):  # type: ignore[no-untyped-def]
    return crm_app.state.session_factory


ALEMBIC = Path(ALEMBIC_INI)


class Factory:
    """Test data made through the API, so every rule (and event) applies as in production."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(path, json=body)
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        result: dict[str, Any] = response.json()
        return result

    async def customer(self, **fields: Any) -> dict[str, Any]:
        body = {"email": f"c-{uuid.uuid4().hex[:10]}@example.com", "name": "Test Customer", **fields}
        return await self._post("/v1/customers", body)

    async def lead(self, **fields: Any) -> dict[str, Any]:
        body = {"email": f"l-{uuid.uuid4().hex[:10]}@example.com", "name": "Test Lead", **fields}
        return await self._post("/v1/leads", body)

    async def deal(self, customer_id: str | None = None, **fields: Any) -> dict[str, Any]:
        if customer_id is None:
            customer_id = (await self.customer())["id"]
        return await self._post("/v1/deals", {"customer_id": customer_id, "title": "A deal", **fields})

    async def move(self, deal_id: str, **fields: Any) -> dict[str, Any]:
        response = await self.client.patch(f"/v1/deals/{deal_id}", json=fields)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def interaction(self, **fields: Any) -> dict[str, Any]:
        return await self._post("/v1/interactions", {"type": "call", **fields})

    async def task(self, customer_id: str, **fields: Any) -> dict[str, Any]:
        return await self._post("/v1/tasks", {"customer_id": customer_id, "title": "Follow up", **fields})

    async def campaign(self, **fields: Any) -> dict[str, Any]:
        return await self._post("/v1/campaigns", {"name": f"Campaign {uuid.uuid4().hex[:8]}", **fields})

    async def pipeline(self, **fields: Any) -> dict[str, Any]:
        body = {
            "name": f"Pipeline {uuid.uuid4().hex[:8]}",
            "stages": [
                {"name": "Lead in", "probability": "0.2"},
                {"name": "Demo", "probability": "0.6"},
                {"name": "Won", "probability": "1", "is_won": True},
                {"name": "Lost", "probability": "0", "is_lost": True},
            ],
            **fields,
        }
        return await self._post("/v1/pipelines", body)


@pytest.fixture
def make(client: httpx.AsyncClient) -> Factory:
    return Factory(client)


async def outbox_events(session_factory: Any, event_type: str | None = None) -> list[dict[str, Any]]:
    """The CloudEvents written to the outbox, oldest first (optionally of one type)."""
    from sqlalchemy import select

    from crm.db import OutboxMessage

    async with session_factory() as session:
        stmt = select(OutboxMessage).order_by(OutboxMessage.id)
        if event_type is not None:
            stmt = stmt.where(OutboxMessage.event_type == event_type)
        rows = (await session.scalars(stmt)).all()
    return [orjson.loads(r.value) | {"_topic": r.topic, "_key": r.key} for r in rows]


@pytest.fixture
def events(session_factory: Any) -> Any:
    """`await events("customer.updated")`: the outbox's events of that type."""

    async def read(event_type: str | None = None) -> list[dict[str, Any]]:
        return await outbox_events(session_factory, event_type)

    return read
