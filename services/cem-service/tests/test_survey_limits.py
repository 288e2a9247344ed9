"""Surveys that close by themselves: at `closes_at` (answers stop at that moment, the scheduler
marks it closed), or with the answer that reaches `max_responses` (never one more, even when
answers race)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import func, select, text, update

from cem.config import CEMSettings
from cem.invitations.models import Invitation
from cem.responses.models import SurveyResponse
from cem.scheduler import InvitationScheduler
from cem.surveys.models import Survey
from cem.surveys.schemas import SurveyUpdate
from cem.surveys.service import update_survey


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


WaitFor = Callable[..., Awaitable[None]]


@contextlib.asynccontextmanager
async def _survey_changing(session_factory: Any, survey_id: str, *changes: dict[str, Any]) -> AsyncIterator[WaitFor]:
    """The `changes` made as `PATCH /v1/surveys/{id}` makes them, in one transaction left open
    inside the block (the survey's row held as a PATCH holds it) and committed when it ends.
    `await wait_for(*tasks)` returns once each task waits on that transaction (or is done)."""
    async with session_factory() as session:
        for change in changes:
            await update_survey(session, uuid.UUID(survey_id), SurveyUpdate.model_validate(change), None)
        holder = await session.scalar(text("SELECT pg_backend_pid()"))

        async def wait_for(*tasks: asyncio.Task[Any]) -> None:
            for _ in range(1000):
                async with session_factory() as probe:
                    blocked = await probe.scalar(
                        text("SELECT count(*) FROM pg_stat_activity WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"),
                        {"pid": holder},
                    )
                if blocked + sum(t.done() for t in tasks) >= len(tasks):
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the answers never reached the survey")

        yield wait_for
        await session.commit()


async def _stored(session_factory: Any, survey_id: str) -> tuple[int, int]:
    """(responses, answered invitations) of the survey, as the database holds them."""
    async with session_factory() as session:
        responses = await session.scalar(select(func.count()).where(SurveyResponse.survey_id == survey_id))
        answered = await session.scalar(
            select(func.count()).where(Invitation.survey_id == survey_id, Invitation.answered_at.is_not(None))
        )
    return int(responses or 0), int(answered or 0)


NEW_QUESTIONS = [{"id": "score", "type": "rating", "metric": "nps", "text": "Would you recommend us to a friend?"}]


async def test_an_answer_racing_a_move_back_to_draft_waits_for_it_and_is_refused(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    invitation = await make.invitation(survey["id"])
    # Both answers start while the survey is active and its questions are the ones they answer;
    # the PATCH that makes it a draft with other questions commits while they are on their way.
    async with _survey_changing(session_factory, survey["id"], {"status": "draft", "questions": NEW_QUESTIONS}) as wait_for:
        api = asyncio.create_task(_answer(client, survey["id"]))
        page = asyncio.create_task(client.post(f"/r/{invitation['token']}", data={"q_nps": "9"}))
        await wait_for(api, page)
    refused, page_refused = await api, await page
    assert refused.status_code == 409 and refused.json()["reason"] == "survey_draft", refused.text
    assert page_refused.status_code == 409 and "Not open yet" in page_refused.text
    assert await _stored(session_factory, survey["id"]) == (0, 0)
    draft = (await client.get(f"/v1/surveys/{survey['id']}")).json()
    assert draft["status"] == "draft" and [q["id"] for q in draft["questions"]] == ["score"]


async def test_an_answer_racing_a_change_of_questions_is_checked_against_the_new_ones(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    invitation = await make.invitation(survey["id"])
    # Back to draft, other questions, active again: all in the transaction the answers wait for.
    change = ({"status": "draft", "questions": NEW_QUESTIONS}, {"status": "active"})
    async with _survey_changing(session_factory, survey["id"], *change) as wait_for:
        api = asyncio.create_task(_answer(client, survey["id"]))
        page = asyncio.create_task(client.post(f"/r/{invitation['token']}", data={"q_nps": "9"}))
        await wait_for(api, page)
    refused, page_refused = await api, await page
    assert refused.status_code == 422, refused.text
    assert {tuple(e["loc"]) for e in refused.json()["errors"]} == {("body", "answers", "nps"), ("body", "answers", "score")}
    assert page_refused.status_code == 422 and "Would you recommend us to a friend?" in page_refused.text
    assert await _stored(session_factory, survey["id"]) == (0, 0)
    # Answered as the survey now asks, both go in.
    assert (await client.post("/v1/responses", json={"survey_id": survey["id"], "answers": {"score": 9}})).status_code == 201
    assert (await client.post(f"/r/{invitation['token']}", data={"q_score": "9"})).status_code == 200
    assert await _stored(session_factory, survey["id"]) == (2, 1)


async def test_answers_racing_a_new_max_responses_keep_to_it(client: httpx.AsyncClient, make: Any, session_factory: Any) -> None:
    survey = await make.survey("nps")
    assert (await _answer(client, survey["id"])).status_code == 201
    # A limit of one more answer is set while two answers are on their way: one of them takes it.
    async with _survey_changing(session_factory, survey["id"], {"max_responses": 2}) as wait_for:
        answers = [asyncio.create_task(_answer(client, survey["id"], n)) for n in (3, 4)]
        await wait_for(*answers)
    done = [await a for a in answers]
    assert sorted(r.status_code for r in done) == [201, 409], [r.text for r in done]
    assert next(r for r in done if r.status_code == 409).json()["reason"] == "survey_closed"
    assert await _stored(session_factory, survey["id"]) == (2, 0)
    full = (await client.get(f"/v1/surveys/{survey['id']}")).json()
    assert full["status"] == "closed" and full["max_responses"] == 2


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


async def test_a_survey_moved_back_to_draft_does_not_open_again_by_itself(
    client: httpx.AsyncClient, make: Any, session_factory: Any, cem_settings: CEMSettings
) -> None:
    monday = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    draft = await make.survey("nps", status="draft", opens_at=_iso(monday))
    came = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with session_factory() as session, session.begin():
        await session.execute(update(Survey).where(Survey.id == draft["id"]).values(opens_at=came))
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).opened == 1
    url = f"/v1/surveys/{draft['id']}"
    assert (await client.get(url)).json()["status"] == "active"

    # Nobody answered: it may go back to draft, and it stays one until opened again.
    back = await client.patch(url, json={"status": "draft"})
    assert back.status_code == 200 and back.json()["status"] == "draft"
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).opened == 0
    still = (await client.get(url)).json()
    assert still["status"] == "draft" and still["opens_at"] is None and still["activated_at"] is None

    # Opened by hand before its opens_at, then back to draft: the same.
    later = await make.survey("nps", status="draft", opens_at=_iso(monday))
    assert (await client.patch(f"/v1/surveys/{later['id']}", json={"status": "active"})).status_code == 200
    back = await client.patch(f"/v1/surveys/{later['id']}", json={"status": "draft"})
    assert back.status_code == 200 and back.json()["opens_at"] is None

    # An opens_at sent with the move schedules the draft again.
    assert (await client.patch(url, json={"status": "active"})).status_code == 200
    rescheduled = await client.patch(url, json={"status": "draft", "opens_at": _iso(came)})
    assert rescheduled.status_code == 200 and dt.datetime.fromisoformat(rescheduled.json()["opens_at"]) == came
    assert (await InvitationScheduler(cem_settings, session_factory).run_once()).opened == 1
    assert (await client.get(url)).json()["status"] == "active"
