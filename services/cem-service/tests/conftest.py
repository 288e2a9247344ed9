"""cem-service fixtures: a migrated PostgreSQL database per run, the app in-process,
tables truncated after every test."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cem.cli import ALEMBIC_INI
from cem.config import CEMSettings
from cem.consumers import crm_customers, interactions
from cem.customers.lifecycle import CustomerErasure
from cem.customers.service import apply_customer_snapshots
from cem.db import ApiKey, OutboxMessage
from cem.main import create_app
from cem.models import Base
from cxkit import testing
from cxkit.dev_broker import DEV_BROKER_SETTINGS, DevBroker
from cxkit.events import new_event
from cxkit.events.payloads import CustomerCreated, InteractionRecorded
from cxkit.kafka.consumer import Delivery
from cxkit.lifecycle import CustomerDataRegistry


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
        **DEV_BROKER_SETTINGS,
        run_relay=False,
        run_consumers=False,
        run_webhook_worker=False,
        run_scheduler=False,
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


async def _admin_client(cem_app: FastAPI, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=cem_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cem", headers=testing.bearer(keys["admin"])) as c:
        yield c
    await testing.truncate_all(cem_app.state.engine, Base.metadata)


@pytest.fixture
async def client(cem_app: FastAPI, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """An admin-key client over the app; every table but api_keys is emptied afterwards."""
    async for c in _admin_client(cem_app, keys):
        yield c


@pytest.fixture(scope="module")
async def module_client(cem_app: FastAPI, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """Like `client`, for a module whose tests only read what a module fixture wrote once: the
    tables are emptied after the module's last test."""
    async for c in _admin_client(cem_app, keys):
        yield c


@pytest.fixture
def session_factory(cem_app: FastAPI):  # type: ignore[no-untyped-def]
    return cem_app.state.session_factory


ALEMBIC = Path(ALEMBIC_INI)


class Factory:
    """Small builders for test data, over the HTTP API where one exists."""

    def __init__(
        self, client: httpx.AsyncClient, session_factory: Any, customer_data: CustomerDataRegistry[CustomerErasure]
    ) -> None:
        self.client = client
        self.session_factory = session_factory
        self.customer_data = customer_data

    async def customer(self, **fields: Any) -> uuid.UUID:
        """A customer as if the CRM had announced it on crm.customers.v1."""
        cid = fields.pop("id", None) or uuid.uuid4()
        now = dt.datetime.now(dt.UTC)
        snapshot = CustomerCreated(
            **{
                "id": cid,
                "email": f"{cid.hex[:8]}@example.com",
                "name": "Ada Lovelace",
                "owner": "sam@example.com",
                "version": 1,
                "created_at": now,
                "updated_at": now,
                **fields,
            }
        )
        async with self.session_factory() as session:
            await apply_customer_snapshots(session, [snapshot], self.customer_data)
            await session.commit()
        return cid

    async def touchpoint(self, key: str = "checkout", **fields: Any) -> dict[str, Any]:
        r = await self.client.post("/v1/touchpoints", json={"key": key, "name": key.replace("-", " ").title(), **fields})
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def survey(self, kind: str = "nps", *, status: str = "active", **fields: Any) -> dict[str, Any]:
        r = await self.client.post("/v1/surveys", json={"name": f"{kind.upper()} survey", "kind": kind, **fields})
        assert r.status_code == 201, r.text
        survey = dict(r.json())
        if status != "draft":
            r = await self.client.patch(f"/v1/surveys/{survey['id']}", json={"status": status})
            assert r.status_code == 200, r.text
            survey = dict(r.json())
        return survey

    async def invitation(self, survey_id: str, **fields: Any) -> dict[str, Any]:
        if "customer_id" not in fields and "email" not in fields:
            fields["customer_id"] = str(await self.customer())
        r = await self.client.post(f"/v1/surveys/{survey_id}/invitations", json=orjson.loads(orjson.dumps(fields)))
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def answer(self, survey_id: str, answers: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """An answer over the API, without an invitation (anonymous unless a customer or email is given)."""
        body = {"survey_id": survey_id, "answers": answers, **fields}
        r = await self.client.post("/v1/responses", json=orjson.loads(orjson.dumps(body)))
        assert r.status_code == 201, r.text
        return dict(r.json())


@pytest.fixture
def make(client: httpx.AsyncClient, session_factory: Any, cem_app: FastAPI) -> Factory:
    return Factory(client, session_factory, cem_app.state.customer_data)


async def outbox_events(session_factory: Any, event_type: str | None = None) -> list[dict[str, Any]]:
    """The CloudEvents written to the outbox, oldest first."""
    async with session_factory() as session:
        stmt = select(OutboxMessage).order_by(OutboxMessage.id)
        if event_type is not None:
            stmt = stmt.where(OutboxMessage.event_type == event_type)
        rows = (await session.scalars(stmt)).all()
    return [orjson.loads(r.value) for r in rows]


@pytest.fixture
def outbox(session_factory: Any) -> Any:
    async def read(event_type: str | None = None) -> list[dict[str, Any]]:
        return await outbox_events(session_factory, event_type)

    return read


def delivery(event_type: str, data: Any, *, source: str = "urn:cx:crm-service", event_id: str | None = None) -> Delivery:
    """An event as the consumer hands it to a handler (the Kafka record itself plays no part)."""
    event = new_event(event_type, source=source, subject=None, data=data)
    if event_id is not None:
        event = event.model_copy(update={"id": event_id})
    return Delivery(event=event, payload=data, record=None)  # type: ignore[arg-type]


class EventApplier:
    """Runs the live consumers' handlers on events inside one transaction, as a poll would."""

    def __init__(self, session_factory: Any, settings: CEMSettings, customer_data: CustomerDataRegistry[CustomerErasure]) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.customer_data = customer_data

    async def __call__(self, *deliveries: Delivery, settings: CEMSettings | None = None) -> None:
        handlers = {**crm_customers.live_handlers(self.customer_data), **interactions.live_handlers(settings or self.settings)}
        async with self.session_factory() as session, session.begin():
            runs: list[list[Delivery]] = []
            for d in deliveries:
                if runs and runs[-1][0].event.type == d.event.type:
                    runs[-1].append(d)
                else:
                    runs.append([d])
            for run in runs:
                await handlers[run[0].event.type](session, run)


@pytest.fixture
def apply(client: httpx.AsyncClient, session_factory: Any, cem_settings: CEMSettings, cem_app: FastAPI) -> EventApplier:
    return EventApplier(session_factory, cem_settings, cem_app.state.customer_data)


def interaction(customer_id: uuid.UUID | None = None, **fields: Any) -> Delivery:
    """An `interaction.recorded` delivery (a purchase at checkout, now, unless told otherwise)."""
    data: dict[str, Any] = {"type": "purchase", "touchpoint": "checkout", "occurred_at": dt.datetime.now(dt.UTC), **fields}
    if customer_id is not None:
        data["customer_id"] = customer_id
    source = data.pop("source", "urn:cx:crm-service")
    event_id = data.pop("event_id", None)
    return delivery("interaction.recorded", InteractionRecorded(**data), source=source, event_id=event_id)


def snapshot(customer_id: uuid.UUID, version: int = 1, **fields: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "id": customer_id,
        "email": f"{customer_id.hex[:8]}@example.com",
        "name": "Ada Lovelace",
        "owner": "sam@example.com",
        "lifecycle_stage": "customer",
        "version": version,
        "created_at": now,
        "updated_at": now,
        **fields,
    }


async def run_cem_command(database_url: str, *args: str, exit_code: int = 0) -> str:
    """`cem ARGS` as its own process on the database; asserts it ended with `exit_code`, returns
    its stderr (where the CLI reports)."""
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cem.cli",
        *args,
        env={**os.environ, "CEM_DATABASE_URL": database_url},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await command.communicate()
    assert command.returncode == exit_code, stderr.decode()[-2000:]
    return stderr.decode()
