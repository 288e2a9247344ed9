"""Reminders: a survey's `reminders` remind invitations not answered yet (`survey.reminded`), at
most `max` times, `after_days` apart; they stop at the answer, expiry, opt-out and erasure,
respect the fatigue rule (a suppressed reminder is stored and announced), and the response
rate counts the answers that came after each reminder."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import Interval, literal, update

from cem.config import CEMSettings
from cem.invitations.models import Invitation
from cem.scheduler import InvitationScheduler
from cxkit.events.payloads import CustomerErased, CustomerUpdated

from .conftest import delivery, snapshot

REMINDERS = {"after_days": 2, "max": 2}


async def age(session_factory: Any, days: float, **where: Any) -> None:
    """Move the invitations (all, or those matching `where`) and their last reminder `days` back."""
    back = literal(dt.timedelta(days=days), Interval())
    stmt = update(Invitation).values(
        created_at=Invitation.created_at - back,
        send_at=Invitation.send_at - back,
        sent_at=Invitation.sent_at - back,
        reminder_judged_at=Invitation.reminder_judged_at - back,
        last_reminded_at=Invitation.last_reminded_at - back,
        expires_at=Invitation.expires_at - back,
    )
    for column, value in where.items():
        stmt = stmt.where(getattr(Invitation, column) == value)
    async with session_factory() as session, session.begin():
        await session.execute(stmt)


async def answer_link(client: httpx.AsyncClient, invitation: dict[str, Any], score: int) -> None:
    r = await client.post("/v1/responses", json={"token": invitation["token"], "answers": {"nps": score}})
    assert r.status_code == 201, r.text


async def remind(settings: CEMSettings, session_factory: Any) -> tuple[int, int]:
    done = await InvitationScheduler(settings, session_factory).run_once()
    return done.reminded, done.reminders_suppressed


async def test_reminders_go_only_to_unanswered_invitations_at_most_max_times_and_the_response_rate_counts_each(
    client: httpx.AsyncClient, make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", reminders=REMINDERS)
    assert survey["reminders"] == REMINDERS
    quiet = await make.survey("nps")  # no reminders
    first, second, third = [await make.invitation(survey["id"]) for _ in range(3)]
    untouched = await make.invitation(quiet["id"])
    await answer_link(client, first, 9)  # answered before any reminder
    assert await remind(cem_settings, session_factory) == (0, 0)  # not due yet
    await age(session_factory, 2.5)

    assert await remind(cem_settings, session_factory) == (2, 0)
    events = await outbox("survey.reminded")
    assert sorted(e["data"]["invitation_id"] for e in events) == sorted([second["id"], third["id"]])
    assert {(e["data"]["reminder"], e["data"]["max_reminders"], e["data"]["survey_id"]) for e in events} == {(1, 2, survey["id"])}
    assert {e["data"]["language"] for e in events} == {"en"}  # for the message carrying the link
    reminded = (await client.get(f"/v1/invitations/{second['id']}")).json()
    assert reminded["reminders_sent"] == 1 and reminded["last_reminded_at"] is not None
    assert (await client.get(f"/v1/invitations/{untouched['id']}")).json()["reminders_sent"] == 0
    assert await remind(cem_settings, session_factory) == (0, 0)  # the next one is after_days later

    await answer_link(client, second, 10)  # answered after the first reminder
    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (1, 0)
    [last] = [e for e in await outbox("survey.reminded") if e["data"]["reminder"] == 2]
    assert last["data"]["invitation_id"] == third["id"] and last["subject"] == third["customer_id"]
    await answer_link(client, third, 3)  # answered after the second reminder
    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (0, 0)  # max reached (and answered)
    assert len(await outbox("survey.reminded")) == 3

    rate = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()["response_rate"]
    assert rate == {
        "invitations": 3,
        "responded": 3,
        "rate": 1.0,
        "answered_before_reminders": 1,
        "answered_after_reminder": [
            {"reminder": 1, "reminded": 2, "answers": 1},
            {"reminder": 2, "reminded": 1, "answers": 1},
        ],
    }


def link_token(event: dict[str, Any], settings: CEMSettings) -> str:
    """The token of the link a `survey.reminded` hands out."""
    url = event["data"]["url"]
    prefix = f"{settings.public_base_url.rstrip('/')}/r/"
    assert url.startswith(prefix), url
    return str(url[len(prefix) :])


async def test_each_reminder_hands_out_a_link_of_its_own_and_every_link_answers_the_invitation_once(
    client: httpx.AsyncClient, make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", reminders=REMINDERS)
    invitation = await make.invitation(survey["id"])
    other = await make.invitation(survey["id"])
    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (2, 0)
    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (2, 0)
    events = [e for e in await outbox("survey.reminded") if e["data"]["invitation_id"] == invitation["id"]]
    assert [e["data"]["reminder"] for e in events] == [1, 2]
    first, second = (link_token(e, cem_settings) for e in events)
    assert len({first, second, invitation["token"]}) == 3
    assert len({link_token(e, cem_settings) for e in await outbox("survey.reminded")}) == 4  # one per reminder

    # Every link opens the same invitation's page: the invitation's own and each reminder's.
    for token in (invitation["token"], first, second):
        page = await client.get(f"/r/{token}", headers={"Authorization": ""})
        assert page.status_code == 200 and survey["name"] in page.text, (token, page.status_code)
    r = await client.post("/v1/responses", json={"token": second, "answers": {"nps": 9}})
    assert r.status_code == 201, r.text
    assert r.json()["invitation_id"] == invitation["id"] and r.json()["customer_id"] == invitation["customer_id"]
    assert (await client.get(f"/v1/invitations/{invitation['id']}")).json()["status"] == "answered"
    # Answered once, whichever link is used next.
    for token in (invitation["token"], first, second):
        again = await client.post("/v1/responses", json={"token": token, "answers": {"nps": 3}})
        assert again.status_code == 409 and again.json()["reason"] == "already_answered", again.text
    r = await client.post("/v1/responses", json={"token": first[:-1], "answers": {"nps": 3}})
    assert r.status_code == 422 and "no invitation has this token" in r.json()["detail"], r.text
    # A reminder's link expires with its invitation.
    [other_event, _] = [e for e in await outbox("survey.reminded") if e["data"]["invitation_id"] == other["id"]]
    await age(session_factory, 30, id=uuid.UUID(other["id"]))
    r = await client.post("/v1/responses", json={"token": link_token(other_event, cem_settings), "answers": {"nps": 3}})
    assert r.status_code == 409 and r.json()["reason"] == "expired", r.text


async def test_max_is_respected_without_an_answer(
    client: httpx.AsyncClient, make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", reminders={"after_days": 1, "max": 1})
    invitation = await make.invitation(survey["id"])
    for _ in range(3):
        await age(session_factory, 1.5)
        await remind(cem_settings, session_factory)
    assert [e["data"]["reminder"] for e in await outbox("survey.reminded")] == [1]
    assert (await client.get(f"/v1/invitations/{invitation['id']}")).json()["reminders_sent"] == 1


async def test_reminders_stop_at_expiry_opt_out_erasure_and_a_closed_survey(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", reminders=REMINDERS)
    expired = await make.invitation(survey["id"], expires_in_days=2)
    opted_out = await make.invitation(survey["id"])
    erased = await make.invitation(survey["id"])
    bare = await make.invitation(survey["id"], email="walk-in@example.com")  # nobody known: still reminded
    await apply(
        delivery("customer.updated", CustomerUpdated(**snapshot(uuid.UUID(opted_out["customer_id"]), 2, survey_opt_out=True)))
    )
    await apply(
        delivery(
            "customer.erased", CustomerErased(customer_id=uuid.UUID(erased["customer_id"]), erased_at=dt.datetime.now(dt.UTC))
        )
    )
    await age(session_factory, 2.5)  # the one valid 2 days has expired
    assert await remind(cem_settings, session_factory) == (1, 0)
    [event] = await outbox("survey.reminded")
    assert event["data"]["invitation_id"] == bare["id"] and event["data"]["email"] == "walk-in@example.com"
    for stopped in (expired, opted_out, erased):
        assert (await client.get(f"/v1/invitations/{stopped['id']}")).json()["reminders_sent"] == 0

    closed = await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "closed"})
    assert closed.status_code == 200, closed.text
    await age(session_factory, 2.5)
    assert await remind(cem_settings, session_factory) == (0, 0)


async def test_a_reminder_within_the_fatigue_window_is_suppressed_and_announced(
    client: httpx.AsyncClient, make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    assert cem_settings.fatigue_days == 7
    survey = await make.survey("nps", reminders=REMINDERS)
    other = await make.survey("csat")
    customer = str(await make.customer())
    invitation = await make.invitation(survey["id"], customer_id=customer)
    await age(session_factory, 3)
    recent = await make.invitation(other["id"], customer_id=customer)  # another survey invited them yesterday
    await age(session_factory, 1, id=uuid.UUID(recent["id"]))

    assert await remind(cem_settings, session_factory) == (0, 1)
    assert await outbox("survey.reminded") == []
    [suppressed] = (await client.get("/v1/suppressions")).json()["items"]
    assert (suppressed["origin"], suppressed["reason"], suppressed["invitation_id"], suppressed["customer_id"]) == (
        "reminder",
        "fatigue",
        invitation["id"],
        customer,
    )
    [throttled] = await outbox("survey.throttled")
    assert (throttled["data"]["reason"], throttled["data"]["survey_id"], throttled["subject"]) == (
        "fatigue",
        survey["id"],
        customer,
    )
    assert await remind(cem_settings, session_factory) == (0, 0)  # judged: not again before after_days

    # A week on, the other invitation is out of the window: the reminder goes (a suppressed one is not counted).
    await age(session_factory, 7)
    assert await remind(cem_settings, session_factory) == (1, 0)
    [reminded] = await outbox("survey.reminded")
    assert (reminded["data"]["invitation_id"], reminded["data"]["reminder"]) == (invitation["id"], 1)


async def test_two_schedulers_at_once_remind_each_invitation_once(
    make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", reminders=REMINDERS)
    for _ in range(6):
        await make.invitation(survey["id"])
    await age(session_factory, 2.5)
    rounds = await asyncio.gather(*(remind(cem_settings, session_factory) for _ in range(2)))
    assert sum(r[0] for r in rounds) == 6
    events = await outbox("survey.reminded")
    assert len({e["data"]["invitation_id"] for e in events}) == len(events) == 6


async def test_reminders_are_validated_and_cleared(client: httpx.AsyncClient, make: Any) -> None:
    for bad in ({"after_days": 0, "max": 1}, {"after_days": 1, "max": 6}, {"after_days": 1}, {"after_days": 1, "max": 1, "x": 1}):
        r = await client.post("/v1/surveys", json={"name": "S", "kind": "nps", "reminders": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    survey = await make.survey("nps", reminders=REMINDERS)
    r = await client.patch(f"/v1/surveys/{survey['id']}", json={"reminders": {"after_days": 5, "max": 3}})
    assert r.status_code == 200 and r.json()["reminders"] == {"after_days": 5, "max": 3}
    r = await client.patch(f"/v1/surveys/{survey['id']}", json={"reminders": None})
    assert r.status_code == 200 and r.json()["reminders"] is None
