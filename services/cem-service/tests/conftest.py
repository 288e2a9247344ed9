"""cem-service fixtures: a migrated PostgreSQL database per run, the app in-process,
tables truncated after every test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cem.cli import ALEMBIC_INI
from cem.config import CEMSettings
from cem.db import ApiKey
from cem.main import create_app
from cem.models import Base
from cxkit import testing
from cxkit.dev_broker import DevBroker


@pytest.fixture(scope="session")
async def cem_database_url() -> AsyncIterator[str]:
    name, url = await testing.migrated_database("cem_test", ALEMBIC_INI)
    yield url
    await testing.drop_database(name)


@pytest.fixture(scope="session")
def cem_settings(cem_database_url: str, broker: DevBroker, tmp_path_factory: pytest.TempPathFactory) -> CEMSettings:
    return CEMSettings(
        database_url=cem_database_url,
        kafka_bootstrap_servers=broker.bootstrap,
        kafka_enable_idempotence=False,
        run_relay=False,
        run_consumers=False,
        log_json=False,
    )


@pytest.fixture(scope="session")
async def cem_app(cem_settings: CEMSettings) -> AsyncIterator[FastAPI]:
    app = create_app(cem_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="session")
async def keys(cem_app: FastAPI) -> dict[str, str]:
    return await testing.make_keys(cem_app.state.session_factory, ApiKey)


@pytest.fixture
async def client(cem_app: FastAPI, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """An admin-key client over the app; every table but api_keys is emptied afterwards."""
    transport = httpx.ASGITransport(app=cem_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cem", headers=testing.bearer(keys["admin"])) as c:
        yield c
    await testing.truncate_all(cem_app.state.engine, Base.metadata)


@pytest.fixture
def session_factory(cem_app: FastAPI):  # type: ignore[no-untyped-def]
    return cem_app.state.session_factory


ALEMBIC = Path(ALEMBIC_INI)
