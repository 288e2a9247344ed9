"""Surveys that close by themselves: at `closes_at` (answers stop at that moment, the scheduler
marks it closed), or with the answer that reaches `max_responses` (never one more, even when
answers race)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
from sqlalchemy import update

from cem.config import CEMSettings
from cem.scheduler import InvitationScheduler
from cem.surveys.models import Survey


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _answer(client: httpx.AsyncClient, survey_id: str, score: int = 9) -> httpx.Response:
    return await client.post("/v1/responses", json={"survey_id": survey_id, "answers": {"nps": score}})


async def test_a_survey_stops_taking_answers_at_closes_at_and_the_scheduler_closes_it(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    survey = await make.survey("nps", closes_at=_iso(soon))
    assert survey["status"] == "active" and dt.datetime.fromisoformat(survey["closes_at"]) == soon.replace(
        microsecond=soon.microsecond
    )
    invitation = await make.invitation(survey["id"])
    assert (await _answer(client, survey["id"])).status_code == 201

    # The moment passes before any scheduler round: answers and invitations stop at once.
    async with session_factory() as session, session.begin():
        await session.execute(update(Survey).where(Survey.id == survey["id"]).values(closes_at=dt.datetime.now(dt.UTC)))
    page = await client.get(f"/r/{invitation['token']}")
    assert page.status_code == 410 and "This survey is closed" in page.text
    refused = await _answer(client, survey["id"])
    assert refused.status_code == 409 and refused.json()["reason"] == "survey_closed"
    assert (await client.post(f"/v1/surveys/{survey['id']}/invitations", json={"email": "x@example.com"})).status_code == 409

    round_ = await InvitationScheduler(cem_settings, session_factory).run_once()
    assert round_.closed == 1
    closed = (await client.get(f"/v1/surveys/{survey['id']}")).json()
    assert closed["status"] == "closed" and closed["closed_at"] == closed["closes_at"]
    assert closed["version"] == survey["version"] + 1
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).closed == 0

    # Reopening needs a closes_at to come (or none), in the same request.
    again = await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"})
    assert again.status_code == 409 and "closes_at has passed" in again.json()["detail"]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    reopened = await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active", "closes_at": _iso(later)})
    assert reopened.status_code == 200 and reopened.json()["status"] == "active"
    # A closes_at set in the past on an active survey closes it now.
    now_closed = await client.patch(f"/v1/surveys/{survey['id']}", json={"closes_at": _iso(dt.datetime.now(dt.UTC))})
    assert now_closed.status_code == 200 and now_closed.json()["status"] == "closed"


async def test_the_answer_that_reaches_max_responses_closes_the_survey_and_racing_answers_never_pass_it(
    client: httpx.AsyncClient, make: Any
) -> None:
    survey = await make.survey("nps", max_responses=2)
    assert survey["max_responses"] == 2
    invitation = await make.invitation(survey["id"])
    assert (await _answer(client, survey["id"])).status_code == 201
    assert (await client.get(f"/v1/surveys/{survey['id']}")).json()["status"] == "active"
    assert (await _answer(client, survey["id"])).status_code == 201
    full = (await client.get(f"/v1/surveys/{survey['id']}")).json()
    assert full["status"] == "closed" and full["closed_at"] is not None
    assert (await _answer(client, survey["id"])).status_code == 409
    page = await client.post(f"/r/{invitation['token']}", data={"q_nps": "9"})
    assert page.status_code == 410 and "This survey is closed" in page.text
    stuck = await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active"})
    assert stuck.status_code == 409 and "max_responses" in stuck.json()["detail"]
    more = await client.patch(f"/v1/surveys/{survey['id']}", json={"status": "active", "max_responses": 5})
    assert more.status_code == 200 and more.json()["status"] == "active"

    # Eight answers at once for the 3 places left: exactly 3 are taken.
    answers = await asyncio.gather(*(_answer(client, survey["id"], n) for n in range(8)))
    assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 5
    listed = (await client.get("/v1/responses", params={"survey_id": survey["id"], "limit": 50})).json()["items"]
    assert len(listed) == 5
    assert (await client.get(f"/v1/surveys/{survey['id']}")).json()["status"] == "closed"


async def test_limits_are_checked_on_input(client: httpx.AsyncClient, make: Any) -> None:
    for bad in ({"max_responses": 0}, {"max_responses": "ten"}, {"closes_at": "tomorrow"}, {"closes_at": "2026-12-31T10:00:00"}):
        r = await client.post("/v1/surveys", json={"name": "Limited", "kind": "nps", **bad})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", bad
    draft = await make.survey("nps", status="draft", closes_at="2020-01-01T00:00:00Z")
    r = await client.patch(f"/v1/surveys/{draft['id']}", json={"status": "active"})
    assert r.status_code == 409 and "closes_at has passed" in r.json()["detail"]
    cleared = await client.patch(f"/v1/surveys/{draft['id']}", json={"status": "active", "closes_at": None})
    assert cleared.status_code == 200 and cleared.json()["closes_at"] is None and cleared.json()["status"] == "active"


async def test_a_draft_opens_by_itself_at_opens_at(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    monday = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    draft = await make.survey("nps", status="draft", opens_at=_iso(monday))
    assert draft["status"] == "draft" and dt.datetime.fromisoformat(draft["opens_at"]) == monday
    assert (await client.post(f"/v1/surveys/{draft['id']}/invitations", json={"email": "x@example.com"})).status_code == 409
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).opened == 0

    came = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with session_factory() as session, session.begin():
        await session.execute(update(Survey).where(Survey.id == draft["id"]).values(opens_at=came))
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).opened == 1
    opened = (await client.get(f"/v1/surveys/{draft['id']}")).json()
    assert opened["status"] == "active" and dt.datetime.fromisoformat(opened["activated_at"]) == came
    assert opened["version"] == draft["version"] + 1
    assert (await client.post(f"/v1/surveys/{draft['id']}/invitations", json={"email": "x@example.com"})).status_code == 201
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).opened == 0

    # A draft whose window has passed as a whole stays a draft.
    gone = await make.survey("nps", status="draft", opens_at="2020-01-01T00:00:00Z", closes_at="2020-02-01T00:00:00Z")
    await InvitationScheduler(cem_settings, session_factory).run_once()
    assert (await client.get(f"/v1/surveys/{gone['id']}")).json()["status"] == "draft"

    backwards = await client.post(
        "/v1/surveys", json={"name": "Backwards", "kind": "nps", "opens_at": _iso(monday), "closes_at": _iso(came)}
    )
    assert backwards.status_code == 422 and backwards.json()["errors"][0]["loc"] == ["body", "closes_at"]
    later = await client.patch(f"/v1/surveys/{gone['id']}", json={"closes_at": "2019-12-31T00:00:00Z"})
    assert later.status_code == 422
