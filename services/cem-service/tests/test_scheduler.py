"""The invitation scheduler: delayed invitations go out when due (once, even with two schedulers),
are cancelled if the customer opted out meanwhile, and recurring surveys come round."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy import select, update

from cem.config import CEMSettings
from cem.invitations.models import Invitation
from cem.main import create_app
from cem.scheduler import InvitationScheduler
from cem.suppressions.models import Suppression
from cxkit.events.payloads import CustomerUpdated
from cxkit.testing import wait_for

from .conftest import delivery, interaction, snapshot

DELAYED = {"interaction_type": "purchase", "delay_minutes": 60, "throttle_days": 30}


async def make_due(session_factory: Any) -> None:
    """Every scheduled invitation's time has come."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    async with session_factory() as session, session.begin():
        await session.execute(update(Invitation).where(Invitation.sent_at.is_(None)).values(send_at=past))


async def backdate(session_factory: Any, customer: uuid.UUID, days: int, model: Any = Invitation) -> None:
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    values = {"created_at": then, "send_at": then, "sent_at": then} if model is Invitation else {"created_at": then}
    async with session_factory() as session, session.begin():
        await session.execute(update(model).where(model.customer_id == customer).values(**values))


async def test_a_delayed_trigger_schedules_and_the_scheduler_sends_it_once_when_due(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", trigger=DELAYED)
    customer = await make.customer(email="ada@example.com")
    occurred = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    await apply(interaction(customer, occurred_at=occurred))
    (scheduled,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations", params={"status": "scheduled"})).json()["items"]
    assert dt.datetime.fromisoformat(scheduled["send_at"]) == occurred + dt.timedelta(minutes=60)
    assert scheduled["sent_at"] is None and await outbox("survey.invited") == []
    scheduler = InvitationScheduler(cem_settings, session_factory)
    assert (await scheduler.run_once()).sent == 0  # not due yet

    await make_due(session_factory)
    assert (await scheduler.run_once()).sent == 1
    assert (await scheduler.run_once()).sent == 0
    sent = (await client.get(f"/v1/invitations/{scheduled['id']}")).json()
    assert sent["status"] == "sent" and sent["sent_at"] is not None
    (announced,) = await outbox("survey.invited")
    assert announced["data"]["invitation_id"] == scheduled["id"] and announced["data"]["email"] == "ada@example.com"
    token = announced["data"]["url"].rsplit("/", 1)[1]
    r = await client.post("/v1/responses", json={"token": token, "answers": {"nps": 9}})
    assert r.status_code == 201 and r.json()["invitation_id"] == scheduled["id"]


async def test_a_scheduled_invitation_counts_for_the_throttle_and_cannot_be_answered_before_it_is_sent(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps", trigger=DELAYED)
    customer = await make.customer()
    await apply(interaction(customer))
    await apply(interaction(customer))
    async with session_factory() as session:
        assert (await session.scalars(select(Suppression.reason))).all() == ["survey_throttle"]
    # An API answer by the customer does not take the unsent invitation.
    answer = await make.answer(survey["id"], {"nps": 10}, customer_id=str(customer))
    assert answer["invitation_id"] is None


async def test_a_scheduled_invitation_for_a_customer_who_opted_out_meanwhile_is_cancelled_and_announced(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", trigger=DELAYED)
    customer = await make.customer()
    await apply(interaction(customer))
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(customer, 2, survey_opt_out=True))))
    await make_due(session_factory)
    done = await InvitationScheduler(cem_settings, session_factory).run_once()
    assert (done.sent, done.cancelled) == (0, 1)
    (cancelled,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "opted_out"
    (suppressed,) = (await client.get("/v1/suppressions")).json()["items"]
    assert (suppressed["origin"], suppressed["reason"], suppressed["invitation_id"]) == ("schedule", "opted_out", cancelled["id"])
    assert [e["data"]["reason"] for e in await outbox("survey.throttled")] == ["opted_out"]
    assert await outbox("survey.invited") == []


async def test_two_schedulers_at_once_send_each_invitation_once(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    await make.survey("nps", trigger=DELAYED)
    customers = [await make.customer() for _ in range(40)]
    await apply(*[interaction(c) for c in customers])
    await make_due(session_factory)
    small_batches = cem_settings.model_copy(update={"scheduler_batch_size": 7})
    rounds = await asyncio.gather(*[InvitationScheduler(small_batches, session_factory).run_once() for _ in range(2)])
    assert sum(r.sent for r in rounds) == 40
    announced = [e["data"]["invitation_id"] for e in await outbox("survey.invited")]
    assert len(announced) == len(set(announced)) == 40


async def test_recurring_survey_reinvites_customers_whose_last_invitation_is_older_than_its_interval(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_settings: CEMSettings, apply: Any
) -> None:
    survey = await make.survey("nps", recurrence_days=90)
    other = await make.survey("csat")
    due, recent, opted_out, tired, suppressed_long_ago = [await make.customer() for _ in range(5)]
    for customer in (due, recent, opted_out, tired):
        await make.invitation(survey["id"], customer_id=str(customer))
    for customer in (due, opted_out, tired):
        await backdate(session_factory, customer, 100)
    await backdate(session_factory, recent, 10)
    await make.invitation(other["id"], customer_id=str(tired))  # invited by another survey just now: fatigue
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(opted_out, 2, survey_opt_out=True))))
    async with session_factory() as session, session.begin():
        session.add(
            Suppression(survey_id=uuid.UUID(survey["id"]), customer_id=suppressed_long_ago, origin="recurrence", reason="fatigue")
        )
    await backdate(session_factory, suppressed_long_ago, 95, Suppression)

    scheduler = InvitationScheduler(cem_settings, session_factory)
    done = await scheduler.run_once()
    assert done.reinvited == 2 and done.suppressed == {"opted_out": 1, "fatigue": 1}
    again = await scheduler.run_once()
    assert (again.reinvited, again.suppressed) == (0, {})

    items = (await client.get(f"/v1/surveys/{survey['id']}/invitations", params={"limit": 50})).json()["items"]
    new = {i["customer_id"] for i in items if i["origin"] == "recurrence"}
    assert new == {str(due), str(suppressed_long_ago)}
    reasons = {s["customer_id"]: s["reason"] for s in (await client.get("/v1/suppressions")).json()["items"]}
    assert reasons[str(opted_out)] == "opted_out" and reasons[str(tired)] == "fatigue"


async def test_the_app_runs_the_scheduler_when_configured(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    await make.survey("nps", trigger=DELAYED)
    await apply(interaction(await make.customer()))
    await make_due(session_factory)
    settings = cem_settings.model_copy(update={"run_scheduler": True, "scheduler_interval_s": 0.05})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert isinstance(app.state.scheduler, InvitationScheduler)

        async def sent() -> bool:
            async with session_factory() as session:
                return (await session.scalars(select(Invitation.sent_at))).one() is not None

        await wait_for(sent, 10)


async def test_cli_run_scheduler_once(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    await make.survey("nps", trigger=DELAYED)
    await apply(interaction(await make.customer()))
    await make_due(session_factory)
    env = {**os.environ, "CEM_DATABASE_URL": cem_settings.database_url, "CEM_LOG_JSON": "false"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cem.cli", "run-scheduler-once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sent 1" in result.stderr
    async with session_factory() as session:
        assert (await session.scalars(select(Invitation.sent_at))).one() is not None
