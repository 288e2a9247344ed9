"""crm-service fixtures: a migrated PostgreSQL database per run, the app in-process,
tables truncated after every test."""

from __future__ import annotations

import asyncio
import contextlib
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from crm.cli import ALEMBIC_INI
from crm.config import CRMSettings
from crm.db import ApiKey
from crm.experience.models import EXPERIENCE_KINDS, FOLLOWUP_OVERDUE
from crm.main import build_consumers, create_app
from crm.models import Base
from cxkit import testing
from cxkit.dev_broker import DEV_BROKER_SETTINGS, DevBroker
from cxkit.events import CloudEvent, decode_event, encode_event, new_event
from cxkit.events import payloads as p
from cxkit.kafka.client import ensure_topics
from cxkit.kafka.consumer import Delivery, EventConsumer


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
        **DEV_BROKER_SETTINGS,
        run_relay=False,
        run_consumers=False,
        run_webhook_worker=False,
        run_task_reminders=False,  # tests announce overdue tasks themselves (test_task_reminders)
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


async def crm_command(database_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`crm ARGS` as its own process on the database (and `env`): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crm.cli",
        *args,
        env={**os.environ, "CRM_DATABASE_URL": database_url, "COLUMNS": "250", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


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


class Kafka:
    """Plain aiokafka on the test broker: what another system would do."""

    def __init__(self, broker: DevBroker) -> None:
        self.broker = broker

    async def produce(self, topic: str, values: list[bytes]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value=value, key=b"k")
        finally:
            await producer.stop()

    async def dlq_reasons(self, dlq_topic: str, consumer_name: str, expected: int) -> dict[bytes, str]:
        """The DLQ's messages from this consumer (value -> reason), read without a consumer group."""
        dlq = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False)
        await dlq.start()
        found: dict[bytes, str] = {}
        try:
            await dlq.topics()  # loads the cluster metadata
            partitions = [TopicPartition(dlq_topic, p) for p in sorted(dlq.partitions_for_topic(dlq_topic) or [])]
            dlq.assign(partitions)
            await dlq.seek_to_beginning(*partitions)
            deadline = asyncio.get_running_loop().time() + 15
            while len(found) < expected and asyncio.get_running_loop().time() < deadline:
                for records in (await dlq.getmany(timeout_ms=200)).values():
                    for rec in records:
                        headers = dict(rec.headers)
                        if headers.get("dlq.consumer", b"").decode() == consumer_name:
                            found[rec.value] = headers["dlq.reason"].decode()
        finally:
            await dlq.stop()
        return found


@pytest.fixture
def kafka(broker: DevBroker) -> Kafka:
    return Kafka(broker)


# --- what the CEM service announces on cem.feedback.v1 ----------------------------------------

CEM_SOURCE = "urn:cx:cem-service"
SURVEY_ID = uuid.UUID("b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e")


# Who the feedback consumer's settings escalate overdue follow-up tasks to.
ESCALATION_OWNER = "lead@ourco.example"


class CemEvents:
    """Hand-made `cem.feedback.v1` events, as the CEM service would publish them. Each method
    returns a CloudEvent; `at` sets its `time` (and the payload's own time where it has one)."""

    survey_id = SURVEY_ID

    @staticmethod
    def _event(event_type: str, data: Any, at: dt.datetime | None, event_id: str | None) -> CloudEvent:
        event = new_event(event_type, source=CEM_SOURCE, subject=str(getattr(data, "customer_id", None) or "") or None, data=data)
        if at is not None:
            event.time = at
        if event_id is not None:
            event.id = event_id
        return event

    def invited(
        self, customer_id: Any, *, at: dt.datetime | None = None, event_id: str | None = None, **fields: Any
    ) -> CloudEvent:
        data = p.SurveyInvited(
            **{
                "invitation_id": uuid.uuid4(),
                "survey_id": SURVEY_ID,
                "survey_name": "Checkout NPS",
                "survey_kind": "nps",
                "customer_id": customer_id,
                "touchpoint": "checkout",
                "channel": "email",
                **fields,
            }
        )
        return self._event("survey.invited", data, at, event_id)

    def reminded(
        self, customer_id: Any, invitation_id: Any, reminder: int = 1, *, at: dt.datetime | None = None, **fields: Any
    ) -> CloudEvent:
        data = p.SurveyReminded(
            **{
                "invitation_id": invitation_id,
                "survey_id": SURVEY_ID,
                "survey_name": "Checkout NPS",
                "survey_kind": "nps",
                "customer_id": customer_id,
                "touchpoint": "checkout",
                "channel": "email",
                "reminder": reminder,
                "max_reminders": 2,
                **fields,
            }
        )
        return self._event("survey.reminded", data, at, None)

    def cancelled(
        self, customer_id: Any, invitation_id: Any, *, at: dt.datetime, sent_at: dt.datetime, **fields: Any
    ) -> CloudEvent:
        data = p.SurveyInvitationCancelled(
            **{
                "invitation_id": invitation_id,
                "survey_id": SURVEY_ID,
                "survey_name": "Checkout NPS",
                "survey_kind": "nps",
                "customer_id": customer_id,
                "touchpoint": "checkout",
                "channel": "email",
                "reason": "by_request",
                "sent_at": sent_at,
                "cancelled_at": at,
                **fields,
            }
        )
        return self._event("survey.invitation_cancelled", data, at, None)

    def opted_out(self, customer_id: Any, invitation_id: Any = None, *, at: dt.datetime | None = None, **kw: Any) -> CloudEvent:
        """The recipient of `invitation_id` (a new one by default) asked, from its link, for no more surveys.
        `event_id=` names the event; other keywords set payload fields."""
        event_id = kw.pop("event_id", None)
        when = at or dt.datetime.now(dt.UTC)
        wish = self._wish(customer_id, invitation_id) | {"opted_out_at": when, "cancelled_invitations": 0}
        data = p.SurveyOptedOut(**wish | kw)
        return self._event("survey.opted_out", data, at, event_id)

    def opted_in(self, customer_id: Any, invitation_id: Any = None, *, at: dt.datetime | None = None, **kw: Any) -> CloudEvent:
        """The recipient of `invitation_id` (a new one by default), opted out, asked from its link for surveys again.
        `event_id=` names the event; other keywords set payload fields."""
        event_id = kw.pop("event_id", None)
        data = p.SurveyOptedIn(**self._wish(customer_id, invitation_id) | {"opted_in_at": at or dt.datetime.now(dt.UTC)} | kw)
        return self._event("survey.opted_in", data, at, event_id)

    @staticmethod
    def _wish(customer_id: Any, invitation_id: Any) -> dict[str, Any]:
        """What an opt-out or an opt-in says of the invitation whose link was used."""
        return {
            "invitation_id": invitation_id or uuid.uuid4(),
            "survey_id": SURVEY_ID,
            "survey_name": "Checkout NPS",
            "survey_kind": "nps",
            "customer_id": customer_id,
            "email": "someone@example.com",
            "touchpoint": "checkout",
            "channel": "email",
        }

    def throttled(
        self, customer_id: Any, reason: str = "survey_throttle", *, at: dt.datetime | None = None, **fields: Any
    ) -> CloudEvent:
        data = p.SurveyThrottled(
            **{"survey_id": SURVEY_ID, "customer_id": customer_id, "reason": reason, "touchpoint": "checkout", **fields}
        )
        return self._event("survey.throttled", data, at, None)

    def response(
        self,
        customer_id: Any,
        score: float | None,
        metric: str = "nps",
        *,
        at: dt.datetime | None = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> CloudEvent:
        scales = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
        low, high = scales.get(metric, (1, 5))
        data = p.SurveyResponseSubmitted(
            **{
                "response_id": uuid.uuid4(),
                "survey_id": SURVEY_ID,
                "survey_kind": metric,
                "customer_id": customer_id,
                "touchpoint": "checkout",
                "score": score,
                "scale_min": low,
                "scale_max": high,
                "category": _category(metric, score),
                "submitted_at": at or dt.datetime.now(dt.UTC),
                "metric": metric,
                **fields,
            }
        )
        return self._event("survey.response.submitted", data, at, event_id)

    def feedback(
        self, customer_id: Any, text: str = "Great service", *, at: dt.datetime | None = None, **fields: Any
    ) -> CloudEvent:
        data = p.FeedbackReceived(
            **{
                "feedback_id": uuid.uuid4(),
                "customer_id": customer_id,
                "touchpoint": "delivery",
                "channel": "email",
                "text": text,
                "sentiment_label": "positive",
                "sentiment_score": 0.62,
                "received_at": at or dt.datetime.now(dt.UTC),
                **fields,
            }
        )
        return self._event("feedback.received", data, at, None)

    def followup(
        self,
        customer_id: Any,
        score: float = 3,
        *,
        at: dt.datetime | None = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> CloudEvent:
        data = p.FollowupRequested(
            **{
                "followup_id": uuid.uuid4(),
                "customer_id": customer_id,
                "response_id": uuid.uuid4(),
                "survey_id": SURVEY_ID,
                "survey_kind": "nps",
                "score": score,
                "reason": f"NPS {score:g} on 0-10 (detractor) in survey 'Checkout NPS'",
                "touchpoint": "checkout",
                "comment": "Delivery was late",
                "metric": "nps",
                **fields,
            }
        )
        return self._event("followup.requested", data, at, event_id)

    def overdue(
        self, request: CloudEvent, *, at: dt.datetime | None = None, event_id: str | None = None, **fields: Any
    ) -> CloudEvent:
        """The CEM's `followup.overdue` of the follow-up `request` (a `followup()` event) asked for."""
        asked = request.data
        requested_at = request.time or dt.datetime.now(dt.UTC)
        data = p.FollowupOverdue(
            **{
                "followup_id": asked["followup_id"],
                "customer_id": asked["customer_id"],
                "survey_id": asked["survey_id"],
                "metric": asked.get("metric"),
                "score": asked.get("score"),
                "requested_at": requested_at,
                "due_at": requested_at + dt.timedelta(hours=24),
                **fields,
            }
        )
        return self._event("followup.overdue", data, at, event_id)


def _category(metric: str, score: float | None) -> str | None:
    if score is None:
        return None
    if metric == "nps":
        return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
    high = 4 if metric == "csat" else 6
    return "positive" if score >= high else "neutral" if score >= high - 1 else "negative"


class RunningConsumer:
    """A consumer running as a task; `stop()` ends it (also done at teardown)."""

    def __init__(self, consumer: EventConsumer, settings: CRMSettings) -> None:
        self.consumer = consumer
        self.settings = settings
        self.name = consumer.name
        self.topic = consumer.topics[0]
        self._task: asyncio.Task[None] | None = asyncio.create_task(consumer.run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.consumer.stop()


@pytest.fixture
async def feedback_consumer(
    crm_app: FastAPI, crm_settings: CRMSettings, client: httpx.AsyncClient
) -> AsyncIterator[RunningConsumer]:
    """The cem.feedback.v1 consumer as crm.main registers it, under a fresh consumer group,
    reading a topic of its own (so events of other tests never reach this one's database)."""
    settings = crm_settings.model_copy(
        update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}", "followup_escalation_owner": ESCALATION_OWNER}
    )
    consumers = {c.name: c for c in build_consumers(settings)(crm_app.state.session_factory)}
    consumer = consumers[f"{settings.consumer_group}.cem-feedback"]
    assert consumer.topics == ["cem.feedback.v1"]
    assert set(consumer.handlers) == {*EXPERIENCE_KINDS, FOLLOWUP_OVERDUE}
    consumer.topics = [f"cem.feedback.v1.test-{uuid.uuid4().hex[:8]}"]
    await ensure_topics(settings, consumer.topics)
    running = RunningConsumer(consumer, settings)
    yield running
    await running.stop()


def delivery(event: CloudEvent) -> Delivery:
    """A consumed event as the consumer hands it to a handler (no Kafka record needed)."""
    decoded, payload = decode_event(encode_event(event))
    return Delivery(decoded, payload, None)  # type: ignore[arg-type]


@pytest.fixture
def cem() -> CemEvents:
    return CemEvents()


@pytest.fixture
def apply_cem(session_factory: Any, crm_settings: CRMSettings) -> Any:
    """`await apply_cem(*events)`: the live consumer's handler on these events, in one transaction
    (as one poll would); returns the number of rows stored."""
    from crm.experience.service import apply_experience_events

    async def run(
        *events: CloudEvent, followup_due: dt.timedelta | None = dt.timedelta(hours=crm_settings.followup_due_hours)
    ) -> int:
        async with session_factory() as session, session.begin():
            return await apply_experience_events(session, [delivery(e) for e in events], followup_due=followup_due)

    return run
