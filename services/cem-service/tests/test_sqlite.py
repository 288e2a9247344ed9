"""The embedded runtime (`make run`) keeps its data in SQLite: the same flows work there, including
the analytics buckets, which use SQLite's date functions instead of date_trunc."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cem.cli import ALEMBIC_INI
from cem.config import CEMSettings
from cem.customers.service import apply_customer_snapshots
from cem.db import ApiKey
from cem.main import create_app
from cem.triggers.scheduler import InvitationScheduler
from cxkit import testing
from cxkit.events.payloads import CustomerCreated, CustomerErased, CustomerMerged, CustomerSnapshot, TaskCompleted

from .conftest import EventApplier, delivery, interaction, snapshot


@pytest.fixture
async def sqlite_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cem.db'}"
    testing.migrate(ALEMBIC_INI, url)
    settings = CEMSettings(database_url=url, run_relay=False, run_consumers=False, log_json=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        keys = await testing.make_keys(app.state.session_factory, ApiKey)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cem", headers=testing.bearer(keys["admin"])) as c:
            yield c, app.state.session_factory


async def test_survey_to_analytics_on_sqlite(sqlite_client: tuple[httpx.AsyncClient, Any]) -> None:
    client, session_factory = sqlite_client
    async with session_factory() as session:
        await apply_customer_snapshots(
            session, [CustomerCreated(id="0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10", email="Ada@Example.com")]
        )
        await session.commit()
    assert (
        await client.post(
            "/v1/touchpoints", json={"key": "checkout", "name": "Checkout", "target_metric": "nps", "target_score": 10}
        )
    ).status_code == 201
    survey = (await client.post("/v1/surveys", json={"name": "NPS", "kind": "nps", "touchpoint": "checkout"})).json()
    await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"})
    invitation = (await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"email": "ada@example.com"})).json()
    assert invitation["customer_id"] == "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10"
    page = await client.post(f"/r/{invitation['token']}", data={"q_nps": "3"})
    assert page.status_code == 200 and "Thank you!" in page.text
    assert (await client.post(f"/r/{invitation['token']}", data={"q_nps": "3"})).status_code == 409
    # Sun 1 Nov, Mon 2 Nov, Sun 8 Nov: weeks of 26 Oct and 2 Nov.
    for when, score in [("2026-11-01T23:00:00Z", 10), ("2026-11-02T00:30:00Z", 9), ("2026-11-08T12:00:00Z", 8)]:
        body = {"survey_id": survey["id"], "answers": {"nps": score}, "submitted_at": when}
        assert (await client.post("/v1/responses", json=body)).status_code == 201

    async def series(interval: str) -> list[tuple[str, int, float | None]]:
        params = {"interval": interval, "to": "2026-11-20T00:00:00Z"}
        body = (await client.get("/v1/analytics/nps", params=params)).json()
        return [(p["start"], p["n"], p["score"]) for p in body["series"]]

    assert await series("day") == [
        ("2026-11-01T00:00:00Z", 1, 100.0),
        ("2026-11-02T00:00:00Z", 1, 100.0),
        ("2026-11-08T00:00:00Z", 1, 0.0),
    ]
    assert await series("week") == [("2026-10-26T00:00:00Z", 1, 100.0), ("2026-11-02T00:00:00Z", 2, 50.0)]
    assert await series("month") == [("2026-11-01T00:00:00Z", 3, 66.6667)]
    everything = (await client.get("/v1/analytics/nps")).json()
    assert everything["n"] == 4 and everything["counts"] == {"promoter": 2, "passive": 1, "detractor": 1}
    assert everything["response_rate"]["rate"] == 1.0
    checkout = (await client.get("/v1/analytics/touchpoints")).json()["items"][0]
    assert checkout["responses"] == 4 and checkout["nps"]["score"] == 25.0 and checkout["gap"] == 15.0
    experience = (await client.get("/v1/customers/0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10/experience")).json()
    assert experience["summary"]["open_followups"] == 1 and experience["summary"]["latest_nps"]["category"] == "detractor"
    feedback = await client.post("/v1/feedback", json={"email": "ADA@example.com", "channel": "chat", "text": "Great!"})
    assert feedback.status_code == 201 and feedback.json()["sentiment"]["label"] == "positive"


async def test_event_flows_on_sqlite(sqlite_client: tuple[httpx.AsyncClient, Any], tmp_path: Path) -> None:
    """Triggers with their rules, the scheduler, merge, erasure, a closed follow-up and the
    recovery rate, on SQLite."""
    client, session_factory = sqlite_client
    settings = CEMSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'cem.db'}")
    apply = EventApplier(session_factory, settings)
    survivor, duplicate = uuid.uuid4(), uuid.uuid4()
    await apply(*[delivery("customer.created", CustomerCreated(**snapshot(c))) for c in (survivor, duplicate)])
    now = dt.datetime.now(dt.UTC).isoformat()
    for body in (
        {"name": "Now", "kind": "nps", "trigger": {"interaction_type": "purchase"}},
        {"name": "Later", "kind": "csat", "trigger": {"interaction_type": "call", "delay_minutes": 5}},
    ):
        survey = (await client.post("/v1/surveys", json=body)).json()
        await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"})
    await apply(interaction(duplicate), interaction(duplicate), interaction(customer_email="walk-in@example.com"))
    await apply(interaction(survivor, type="call"))  # due in 5 minutes: scheduled
    suppressions = (await client.get("/v1/analytics/suppressions")).json()
    assert suppressions["reasons"]["survey_throttle"] == 1
    assert (await InvitationScheduler(settings, session_factory).run_once()).sent == 0

    await apply(
        delivery(
            "customer.merged",
            CustomerMerged(survivor_id=survivor, duplicate_id=duplicate, survivor=CustomerSnapshot(**snapshot(survivor, 2))),
        )
    )
    nps = (await client.get("/v1/surveys", params={"kind": "nps"})).json()["items"][0]
    answer = await client.post(
        "/v1/responses", json={"survey_id": nps["id"], "customer_id": str(duplicate), "answers": {"nps": 2}, "submitted_at": now}
    )
    assert answer.status_code == 201 and answer.json()["customer_id"] == str(survivor)
    view = (await client.get(f"/v1/customers/{survivor}/experience")).json()
    assert len(view["touchpoint_history"]) == 3 and view["summary"]["suppressions"] == 1
    assert (await client.get(f"/v1/customers/{duplicate}/experience")).status_code == 308
    followup_id = view["followups"][0]["id"]
    done = TaskCompleted(
        task_id=uuid.uuid4(),
        customer_id=survivor,
        origin="followup",
        origin_ref=followup_id,
        completed_at=dt.datetime.now(dt.UTC),
    )
    await apply(delivery("task.completed", done))
    await client.post("/v1/responses", json={"survey_id": nps["id"], "customer_id": str(survivor), "answers": {"nps": 8}})
    recovery = (await client.get("/v1/analytics/recovery")).json()
    assert (recovery["detractors"], recovery["followed_up"], recovery["recovered"]) == (1, 1, 1)

    await apply(delivery("customer.erased", CustomerErased(customer_id=survivor, erased_at=dt.datetime.now(dt.UTC))))
    view = (await client.get(f"/v1/customers/{survivor}/experience")).json()
    assert view["customer"]["email"] is None and view["summary"]["responses"] == 2
    assert {i["status"] for i in view["invitations"] if i["survey_id"] != nps["id"]} == {"cancelled"}
