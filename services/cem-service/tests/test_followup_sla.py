"""Follow-up SLAs: a follow-up is due by its survey's bands (or the default policy), the scheduler
announces one past due once (`followup.overdue`), and /v1/analytics/recovery reports time to
first action, time to close and the share closed within SLA, per period, on a hand-worked fixture."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from cem.config import CEMSettings
from cem.followups.models import Followup
from cem.followups.sla import due_at
from cem.scheduler import InvitationScheduler
from cxkit.events.payloads import CustomerErased, CustomerUpdated, TaskCompleted

from .conftest import delivery, interaction, snapshot
from .test_recovery import close_followup_of

BANDS = [{"max_score": 3, "hours": 4}, {"max_score": 6, "hours": 24}]


async def followup_of(session_factory: Any, customer: uuid.UUID) -> Followup:
    async with session_factory() as session:
        return (await session.scalars(select(Followup).where(Followup.customer_id == customer))).one()


async def set_followup(session_factory: Any, customer: uuid.UUID, **values: Any) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(update(Followup).where(Followup.customer_id == customer).values(**values))


async def test_a_followup_is_due_by_its_surveys_band_or_the_default_policy(
    client: httpx.AsyncClient, make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    nps = await make.survey("nps", followup_sla=BANDS)
    assert nps["followup_sla"] == BANDS
    csat = await make.survey("csat")  # no bands of its own: CEM_FOLLOWUP_SLA
    assert nps["followup_sla"] and csat["followup_sla"] is None
    low, mid, unhappy = [await make.customer() for _ in range(3)]
    await make.answer(nps["id"], {"nps": 2}, customer_id=str(low))
    await make.answer(nps["id"], {"nps": 5}, customer_id=str(mid))
    await make.answer(csat["id"], {"csat": 1}, customer_id=str(unhappy))
    expected = {low: 4, mid: 24, unhappy: cem_settings.followup_sla["csat"][0].hours}
    assert expected[unhappy] == 24
    for customer, hours in expected.items():
        followup = await followup_of(session_factory, customer)
        assert followup.due_at == followup.created_at + dt.timedelta(hours=hours)
    requested = {e["data"]["customer_id"]: e["data"]["due_at"] for e in await outbox("followup.requested")}
    for customer in expected:
        followup = await followup_of(session_factory, customer)
        assert followup.due_at is not None
        assert dt.datetime.fromisoformat(requested[str(customer)]) == followup.due_at
    [shown] = (await client.get(f"/v1/customers/{low}/experience")).json()["followups"]
    assert dt.datetime.fromisoformat(shown["due_at"]) == (await followup_of(session_factory, low)).due_at
    assert shown["overdue_at"] is None


async def test_followup_sla_bands_are_validated_and_kept_in_order(client: httpx.AsyncClient, make: Any) -> None:
    for bad in (
        [{"max_score": 3, "hours": 0}],
        [{"max_score": False, "hours": 4}],
        [{"max_score": 3, "hours": 4.5}],
        [{"max_score": 11, "hours": 4}],
        [{"max_score": 3}],
        [{"max_score": 3, "hours": 4, "extra": 1}],
    ):
        r = await client.post("/v1/surveys", json={"name": "S", "kind": "nps", "followup_sla": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    survey = await make.survey("nps", followup_sla=BANDS[::-1])
    assert survey["followup_sla"] == BANDS  # kept in the order they are read in
    r = await client.patch(f"/v1/surveys/{survey['id']}", json={"followup_sla": None})
    assert r.status_code == 200 and r.json()["followup_sla"] is None


async def test_followup_sla_bands_with_the_same_max_score_are_422(client: httpx.AsyncClient, make: Any) -> None:
    # The second band of a max_score could never be read: the first one holding a score wins.
    twice = [{"max_score": 6, "hours": 4}, {"max_score": 3, "hours": 12}, {"max_score": 6, "hours": 24}]
    survey = await make.survey("nps", followup_sla=BANDS)
    for r in (
        await client.post("/v1/surveys", json={"name": "S", "kind": "nps", "followup_sla": twice}),
        await client.patch(f"/v1/surveys/{survey['id']}", json={"followup_sla": twice}),
    ):
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
        [error] = r.json()["errors"]
        assert error["loc"] == ["body", "followup_sla"] and "max_score 6" in error["msg"], error
    assert (await client.get(f"/v1/surveys/{survey['id']}")).json()["followup_sla"] == BANDS


async def test_an_overdue_followup_is_announced_once_and_a_closed_or_not_yet_due_one_never(
    make: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", followup_sla=BANDS)
    late, closed, fresh = [await make.customer() for _ in range(3)]
    for customer in (late, closed, fresh):
        await make.answer(survey["id"], {"nps": 1}, customer_id=str(customer))
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await set_followup(session_factory, late, due_at=past)
    await set_followup(session_factory, closed, due_at=past, status="closed", closed_at=past)
    scheduler = InvitationScheduler(cem_settings, session_factory)

    assert (await scheduler.run_once()).overdue == 1
    assert (await scheduler.run_once()).overdue == 0
    [event] = await outbox("followup.overdue")
    followup = await followup_of(session_factory, late)
    assert event["subject"] == str(late)
    assert event["data"]["followup_id"] == str(followup.id) and event["data"]["survey_id"] == survey["id"]
    assert dt.datetime.fromisoformat(event["data"]["due_at"]) == past
    assert dt.datetime.fromisoformat(event["data"]["requested_at"]) == followup.created_at
    assert followup.overdue_at is not None
    assert (await followup_of(session_factory, fresh)).overdue_at is None


# --- recovery timings -------------------------------------------------------------------------

W1 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # a Monday
W2 = W1 + dt.timedelta(days=7)


def h(start: dt.datetime, hours: float) -> dt.datetime:
    return start + dt.timedelta(hours=hours)


async def test_recovery_reports_time_to_first_action_time_to_close_and_within_sla_per_week(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    """Four follow-ups, worked out by hand (hours from raising; due 24 h after, f4 4 h):

    week of W1: f1 raised Tue: a call at 2, closed at 10       -> first action 2, close 10, within
                f2 raised Tue: no contact, closed at 30        -> first action 30 (the close), close 30, late
                f3 raised Wed: a purchase at 1 (not an action),
                   an email at 6, still open past due          -> first action 6, not closed, late
    week of W2: f4 raised Tue: a call 1 h before (not counted),
                   a meeting at 1, closed at 3                 -> first action 1, close 3, within
    All: first action [1, 2, 6, 30]: median 4, p90 6 + 0.7 * 24 = 22.8; close [3, 10, 30]: median 10,
    p90 10 + 0.8 * 20 = 26; within SLA 2 of 4.
    W1: first action [2, 6, 30]: median 6, p90 6 + 0.8 * 24 = 25.2; close [10, 30]: median 20,
    p90 10 + 0.9 * 20 = 28; within 1 of 3.  W2: 1, 1; 3, 3; 1 of 1."""
    survey = await make.survey("nps")
    f1, f2, f3, f4, bystander = [await make.customer() for _ in range(5)]
    raised = {f1: h(W1, 24), f2: h(W1, 24), f3: h(W1, 48), f4: h(W2, 24)}
    closes = {f1: 10, f2: 30, f3: None, f4: 3}
    for customer, at in raised.items():
        await make.answer(survey["id"], {"nps": 2}, customer_id=str(customer))
        close = closes[customer]
        await set_followup(
            session_factory,
            customer,
            created_at=at,
            due_at=h(at, 4 if customer == f4 else 24),
            status="open" if close is None else "closed",
            closed_at=None if close is None else h(at, close),
        )
    await apply(
        interaction(f1, type="call", occurred_at=h(raised[f1], 2)),
        interaction(f1, type="call", occurred_at=h(raised[f1], 5)),
        interaction(f3, type="purchase", occurred_at=h(raised[f3], 1)),
        interaction(f3, type="email", occurred_at=h(raised[f3], 6)),
        interaction(f4, type="call", occurred_at=h(raised[f4], -1)),
        interaction(f4, type="meeting", occurred_at=h(raised[f4], 1)),
        interaction(bystander, type="call", occurred_at=h(raised[f2], 1)),
    )

    r = await client.get("/v1/analytics/recovery", params={"interval": "week"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["interval"] == "week"
    assert body["timing"] == {
        "followups": 4,
        "time_to_first_action": {"n": 4, "median_hours": 4.0, "p90_hours": 22.8},
        "time_to_close": {"n": 3, "median_hours": 10.0, "p90_hours": 26.0},
        "within_sla": {"due": 4, "within": 2, "share": 0.5},
    }
    assert body["periods"] == [
        {
            "start": "2026-11-02T00:00:00Z",
            "followups": 3,
            "time_to_first_action": {"n": 3, "median_hours": 6.0, "p90_hours": 25.2},
            "time_to_close": {"n": 2, "median_hours": 20.0, "p90_hours": 28.0},
            "within_sla": {"due": 3, "within": 1, "share": 0.3333},
        },
        {
            "start": "2026-11-09T00:00:00Z",
            "followups": 1,
            "time_to_first_action": {"n": 1, "median_hours": 1.0, "p90_hours": 1.0},
            "time_to_close": {"n": 1, "median_hours": 3.0, "p90_hours": 3.0},
            "within_sla": {"due": 1, "within": 1, "share": 1.0},
        },
    ]
    assert body["detractors"] == 4 and body["followed_up"] == 3  # the counts stay as they were

    window = (await client.get("/v1/analytics/recovery", params={"from": W2.isoformat()})).json()
    assert window["timing"]["followups"] == 1 and len(window["periods"]) == 1
    empty = (await client.get("/v1/analytics/recovery", params={"to": W1.isoformat()})).json()
    assert empty["timing"] == {
        "followups": 0,
        "time_to_first_action": {"n": 0, "median_hours": None, "p90_hours": None},
        "time_to_close": {"n": 0, "median_hours": None, "p90_hours": None},
        "within_sla": {"due": 0, "within": 0, "share": None},
    }
    assert empty["periods"] == []
    assert (await client.get("/v1/analytics/recovery", params={"interval": "year"})).status_code == 422


# --- the re-survey after a follow-up ------------------------------------------------------------


async def test_a_closed_followup_brings_a_resurvey_after_its_days_once_by_the_invitation_rules(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", resurvey_after_days=3)
    assert survey["resurvey_after_days"] == 3
    due, recent, opted_out, still_open = [await make.customer() for _ in range(4)]
    for customer in (due, recent, opted_out, still_open):
        await make.answer(survey["id"], {"nps": 2}, customer_id=str(customer))
    for customer, days in ((due, 4), (recent, 1), (opted_out, 4)):
        await close_followup_of(session_factory, apply, customer, "nps", days)
    await apply(delivery("customer.updated", CustomerUpdated(**snapshot(opted_out, 2, survey_opt_out=True))))
    scheduler = InvitationScheduler(cem_settings, session_factory)

    done_round = await scheduler.run_once()
    assert (done_round.resurveyed, done_round.suppressed) == (1, {"opted_out": 1})
    [invited] = await outbox("survey.invited")
    assert (invited["data"]["customer_id"], invited["data"]["survey_id"]) == (str(due), survey["id"])
    [invitation] = (await client.get(f"/v1/surveys/{survey['id']}/invitations")).json()["items"]
    assert (invitation["origin"], invitation["customer_id"], invitation["status"]) == ("followup", str(due), "sent")
    [suppressed] = (await client.get("/v1/suppressions")).json()["items"]
    assert (suppressed["origin"], suppressed["reason"], suppressed["customer_id"]) == ("followup", "opted_out", str(opted_out))
    again = await scheduler.run_once()  # each closed follow-up is judged once
    assert (again.resurveyed, again.suppressed) == (0, {})
    assert len(await outbox("survey.invited")) == 1


async def close_by_task(apply: Any, followup: Followup, days_ago: float) -> None:
    """The CRM reports the follow-up's task done `days_ago` days ago (announced now)."""
    done = TaskCompleted(
        task_id=uuid.uuid4(),
        customer_id=followup.customer_id,
        origin="followup",
        origin_ref=str(followup.id),
        completed_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago),
    )
    await apply(delivery("task.completed", done))


async def followups_of(session_factory: Any, customer: uuid.UUID) -> list[Followup]:
    async with session_factory() as session:
        stmt = select(Followup).where(Followup.customer_id == customer).order_by(Followup.created_at, Followup.id)
        return list((await session.scalars(stmt)).all())


async def test_turning_resurvey_on_asks_only_followups_closed_while_it_was_on_lately_once_per_customer(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps")  # re-survey off
    before_on, years_ago, after_on, stale, twice = [await make.customer() for _ in range(5)]
    for customer in (before_on, years_ago, after_on, stale, twice, twice):
        await make.answer(survey["id"], {"nps": 2}, customer_id=str(customer))
    # Closed while re-survey was off: lately, and two years ago (kept from before the rule).
    await close_by_task(apply, (await followups_of(session_factory, before_on))[0], 33)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=730)
    await set_followup(session_factory, years_ago, status="closed", closed_at=long_ago, resurveyed_at=None)

    r = await client.patch(f"/v1/surveys/{survey['id']}", json={"resurvey_after_days": 30})
    assert r.status_code == 200 and r.json()["resurvey_after_days"] == 30, r.text
    # Closed while it is on: 31 days ago (due), 100 days ago (a stopped scheduler's backlog, too
    # late now), and one customer's two follow-ups, both due in one round.
    await close_by_task(apply, (await followups_of(session_factory, after_on))[0], 31)
    await close_by_task(apply, (await followups_of(session_factory, stale))[0], 100)
    first, second = await followups_of(session_factory, twice)
    await close_by_task(apply, first, 32)
    await close_by_task(apply, second, 31)
    scheduler = InvitationScheduler(cem_settings, session_factory)

    done = await scheduler.run_once()
    assert (done.resurveyed, done.suppressed) == (2, {})
    invited = sorted(e["data"]["customer_id"] for e in await outbox("survey.invited"))
    assert invited == sorted([str(after_on), str(twice)])
    assert await outbox("survey.throttled") == []
    for customer in (twice, after_on):  # every follow-up of the round is judged, once
        assert all(f.resurveyed_at is not None for f in await followups_of(session_factory, customer))
    again = await scheduler.run_once()
    assert (again.resurveyed, again.suppressed) == (0, {})
    assert len(await outbox("survey.invited")) == 2


async def test_an_erasure_cancels_the_customers_open_followups_and_none_is_announced_overdue(
    client: httpx.AsyncClient, make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    survey = await make.survey("nps", followup_sla=BANDS, resurvey_after_days=1)
    leaving, stays = await make.customer(), await make.customer()
    for customer in (leaving, leaving, stays):
        await make.answer(survey["id"], {"nps": 1}, customer_id=str(customer))
    was_closed, was_open = await followups_of(session_factory, leaving)
    await close_by_task(apply, was_closed, 0.5)
    assert (await client.get(f"/v1/customers/{leaving}/experience")).json()["summary"]["open_followups"] == 1

    await apply(delivery("customer.erased", CustomerErased(customer_id=leaving, erased_at=dt.datetime.now(dt.UTC))))
    cancelled = (await client.get(f"/v1/followups/{was_open.id}")).json()
    assert (cancelled["status"], cancelled["closed_at"], cancelled["closed_by"], cancelled["task_id"]) == (
        "cancelled",
        None,
        None,
        None,
    )
    assert cancelled["overdue"] is False
    assert (await client.get(f"/v1/followups/{was_closed.id}")).json()["status"] == "closed"  # done stays done
    listed = (await client.get("/v1/followups", params={"status": "cancelled"})).json()["items"]
    assert [f["id"] for f in listed] == [str(was_open.id)]
    assert (await client.get(f"/v1/customers/{leaving}/experience")).json()["summary"]["open_followups"] == 0
    # The CRM finishing the task later does not reopen or close it.
    await close_by_task(apply, was_open, 0)
    assert (await client.get(f"/v1/followups/{was_open.id}")).json()["status"] == "cancelled"

    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await set_followup(session_factory, leaving, due_at=past)
    await set_followup(session_factory, stays, due_at=past)
    done = await InvitationScheduler(cem_settings, session_factory).run_once()
    assert done.overdue == 1
    assert [e["data"]["customer_id"] for e in await outbox("followup.overdue")] == [str(stays)]


async def test_an_erased_customers_followup_left_open_is_never_announced_overdue(
    make: Any, apply: Any, outbox: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    """One open despite the erasure (raised by a replay, say): the overdue claim skips it."""
    survey = await make.survey("nps", followup_sla=BANDS)
    leaving = await make.customer()
    await make.answer(survey["id"], {"nps": 1}, customer_id=str(leaving))
    await apply(delivery("customer.erased", CustomerErased(customer_id=leaving, erased_at=dt.datetime.now(dt.UTC))))
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await set_followup(session_factory, leaving, status="open", due_at=past)
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).overdue == 0
    assert await outbox("followup.overdue") == []


async def test_a_cancelled_followup_settles_no_sla_in_the_recovery_report(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    """Past due and open: an SLA missed. Past due and cancelled (its customer erased while it
    was open): nobody was to act, so it is neither due nor late; it was raised all the same."""
    survey = await make.survey("nps", followup_sla=BANDS)
    leaving, stays = await make.customer(), await make.customer()
    for customer in (leaving, stays):
        await make.answer(survey["id"], {"nps": 1}, customer_id=str(customer))
    await apply(delivery("customer.erased", CustomerErased(customer_id=leaving, erased_at=dt.datetime.now(dt.UTC))))
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for customer in (leaving, stays):
        await set_followup(session_factory, customer, due_at=past)
    assert (await followup_of(session_factory, leaving)).status == "cancelled"

    timing = (await client.get("/v1/analytics/recovery")).json()["timing"]
    assert timing["followups"] == 2
    assert timing["within_sla"] == {"due": 1, "within": 0, "share": 0.0}


def test_the_default_sla_policy_is_read_in_order_of_max_score(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEM_FOLLOWUP_SLA", '{"nps": [{"max_score": 6, "hours": 24}, {"max_score": 3, "hours": 12}]}')
    policy = CEMSettings().followup_sla
    assert [(b.max_score, b.hours) for b in policy["nps"]] == [(3, 12), (6, 24)]
    raised = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    # As the same bands on a survey (kept in order there) give it.
    assert due_at(raised, "nps", 2, None, policy) == raised + dt.timedelta(hours=12)
    assert due_at(raised, "nps", 2, [{"max_score": 3, "hours": 12}, {"max_score": 6, "hours": 24}], {}) == due_at(
        raised, "nps", 2, None, policy
    )
    assert due_at(raised, "nps", 5, None, policy) == raised + dt.timedelta(hours=24)


def test_a_default_sla_policy_with_two_bands_of_one_max_score_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEM_FOLLOWUP_SLA", '{"csat": [{"max_score": 2, "hours": 4}, {"max_score": 2, "hours": 24}]}')
    with pytest.raises(ValidationError, match=r"CEM_FOLLOWUP_SLA: csat: two bands have max_score 2"):
        CEMSettings()
