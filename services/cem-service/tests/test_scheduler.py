"""The invitation scheduler: delayed invitations go out when due (once, even with two schedulers),
are cancelled if the customer opted out or the survey closed meanwhile, wait while the survey is
back in draft, and recurring surveys come round (a cancelled invitation keeps its place)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cem.config import CEMSettings
from cem.invitations.models import Invitation
from cem.main import create_app
from cem.scheduler import InvitationScheduler
from cem.suppressions.models import Suppression
from cem.surveys.models import Survey
from cem.triggers.service import send_due_invitations
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


@pytest.mark.parametrize("closed_by", ["hand", "max_responses"])
async def test_a_scheduled_invitation_of_a_survey_closed_meanwhile_is_cancelled_not_sent(
    client: httpx.AsyncClient,
    make: Any,
    apply: Any,
    outbox: Any,
    session_factory: Any,
    cem_settings: CEMSettings,
    closed_by: str,
) -> None:
    survey = await make.survey("nps", trigger=DELAYED, max_responses=1)
    await apply(interaction(await make.customer()))
    if closed_by == "hand":
        r = await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "closed"})
        assert r.status_code == 200, r.text
    else:
        await make.answer(survey["id"], {"nps": 9})  # the answer that reaches max_responses closes it
    assert (await client.get(f"/v1/surveys/{survey['id']}")).json()["status"] == "closed"
    await make_due(session_factory)
    scheduler = InvitationScheduler(cem_settings, session_factory)
    done = await scheduler.run_once()
    assert (done.sent, done.cancelled) == (0, 1)
    (cancelled,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]
    assert (cancelled["status"], cancelled["cancel_reason"], cancelled["sent_at"]) == ("cancelled", "survey_closed", None)
    assert await outbox("survey.invited") == []
    assert await outbox("survey.invitation_cancelled") == []  # never announced, so not withdrawn either
    # Not a rule's suppression (throttle, fatigue, opt-out): nothing is announced as throttled.
    assert await outbox("survey.throttled") == []
    assert (await scheduler.run_once()).cancelled == 0  # judged once


async def test_a_scheduled_invitation_due_after_its_surveys_closes_at_is_cancelled_before_the_survey_is_closed(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", trigger=DELAYED)
    await apply(interaction(await make.customer()))
    await make_due(session_factory)
    # closes_at passed between the interaction and send_at; the round has not closed the survey yet.
    async with session_factory() as session, session.begin():
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await session.execute(update(Survey).where(Survey.id == uuid.UUID(survey["id"])).values(closes_at=past))
    async with session_factory() as session, session.begin():
        sending = await send_due_invitations(session, cem_settings, 10)
    assert (sending.sent, sending.cancelled) == (0, 1)
    (cancelled,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "survey_closed")
    assert await outbox("survey.invited") == []


async def test_a_scheduled_invitation_of_a_survey_back_in_draft_waits_and_goes_out_once_it_is_active_again(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", trigger=DELAYED)
    await apply(interaction(await make.customer()))
    assert (await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "draft"})).status_code == 200
    await make_due(session_factory)
    scheduler = InvitationScheduler(cem_settings, session_factory)
    done = await scheduler.run_once()
    assert (done.sent, done.cancelled) == (0, 0)
    (held,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]
    assert held["status"] == "scheduled" and await outbox("survey.invited") == []

    active = await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"})
    assert active.status_code == 200, active.text
    assert (await scheduler.run_once()).sent == 1
    sent = (await client.get(f"/v1/invitations/{held['id']}")).json()
    # Due once the survey was active again: the throttle and fatigue rules count it from then.
    assert sent["status"] == "sent" and sent["send_at"] == active.json()["activated_at"]
    assert [e["data"]["invitation_id"] for e in await outbox("survey.invited")] == [held["id"]]


async def test_a_scheduled_invitation_held_by_a_draft_survey_past_its_expiry_is_cancelled(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", trigger=DELAYED)
    await apply(interaction(await make.customer()))
    assert (await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "draft"})).status_code == 200
    # Due, and so long ago that, had it gone out on time, its link would have expired by now.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=cem_settings.invitation_ttl_days + 1)
    async with session_factory() as session, session.begin():
        await session.execute(
            update(Invitation).values(send_at=past, expires_at=past + dt.timedelta(days=cem_settings.invitation_ttl_days))
        )
    done = await InvitationScheduler(cem_settings, session_factory).run_once()
    assert (done.sent, done.cancelled) == (0, 1)
    (cancelled,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "survey_draft")
    assert (await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"})).status_code == 200
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).sent == 0
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


async def test_a_cancelled_invitation_keeps_its_place_in_the_recurrence(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", recurrence_days=90, trigger=DELAYED)
    again, only, withdrawn_unsent = [await make.customer() for _ in range(3)]
    for customer in (again, only, withdrawn_unsent):
        await make.invitation(survey["id"], customer_id=str(customer))
    # `only`: their one invitation went out, and was cancelled afterwards.
    (only_invitation,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations", params={"customer_id": str(only)})).json()[
        "items"
    ]
    assert (await client.post(f"/v1/invitations/{only_invitation['id']}/cancel")).status_code == 200
    for customer in (again, only, withdrawn_unsent):
        await backdate(session_factory, customer, 100)
    # `withdrawn_unsent`: a purchase schedules an invitation, cancelled before it went out.
    await apply(interaction(withdrawn_unsent))
    (scheduled,) = (await client.get(f"/v1/surveys/{survey['id']}/invitations", params={"status": "scheduled"})).json()["items"]
    assert (await client.post(f"/v1/invitations/{scheduled['id']}/cancel")).status_code == 200

    scheduler = InvitationScheduler(cem_settings, session_factory)
    done = await scheduler.run_once()
    assert (done.reinvited, done.suppressed) == (2, {})
    items = (await client.get(f"/v1/surveys/{survey['id']}/invitations", params={"limit": 50})).json()["items"]
    reinvited = {i["customer_id"]: i for i in items if i["origin"] == "recurrence"}
    # A cancelled send still counts (`only` is not dropped); a cancel before sending starts the
    # interval again (`withdrawn_unsent` is not re-invited at once, which would undo the cancel).
    assert reinvited.keys() == {str(again), str(only)}

    assert (await client.post(f"/v1/invitations/{reinvited[str(again)]['id']}/cancel")).status_code == 200
    assert (await scheduler.run_once()).reinvited == 0
    recurrences = [
        e for e in await outbox("survey.invited") if e["data"]["invitation_id"] in {i["id"] for i in reinvited.values()}
    ]
    assert len(await outbox("survey.invited")) == 3 + 2 and len(recurrences) == 2


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
