"""crm-service fixtures: a migrated PostgreSQL database per run, the app in-process,
tables truncated after every test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
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
