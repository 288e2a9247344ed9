"""What the CEM service reports on `cem.feedback.v1`: kept in the CRM's experience projection,
summarised in the customer view, shown on the timeline, turned into follow-up tasks, moved by
merges and stripped of the customer's words by erasure."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, update

from crm.config import CRMSettings
from crm.db import OutboxMessage
from crm.experience.models import ExperienceEvent
from crm.tasks.models import Task
from cxkit.db import utcnow
from cxkit.events import InvalidEvent, encode_event
from cxkit.kafka.consumer import PermanentEventError
from cxkit.testing import wait_for

from .customer_races import erase, merge, sent_during

T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def view(client: httpx.AsyncClient, customer_id: Any) -> dict[str, Any]:
    r = await client.get(f"/v1/customers/{customer_id}/view")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def followup_tasks(client: httpx.AsyncClient, customer_id: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/tasks", params={"customer_id": str(customer_id), "origin": "followup"})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def timeline(client: httpx.AsyncClient, customer_id: Any, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/customers/{customer_id}/timeline", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# --- the customer view ----------------------------------------------------------------------


async def test_experience_is_null_until_the_cem_reports_then_sums_up_answers_feedback_invitations_and_followups(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, events: Any
) -> None:
    cid = uuid.UUID((await make.customer(owner="kim@ourco.example"))["id"])
    other = uuid.UUID((await make.customer())["id"])
    assert (await view(client, cid))["experience"] is None

    followup = cem.followup(cid, 3, at=at(3))
    await apply_cem(
        cem.invited(cid, at=at(0)),
        cem.response(cid, 9, at=at(1)),
        cem.response(cid, 3, at=at(3), comment="Delivery was late"),
        cem.response(cid, 5, "csat", at=at(4)),
        cem.response(cid, 2, "csat", at=at(5)),
        cem.response(cid, 4, "csat", at=at(5.5)),
        cem.response(cid, None, "csat", at=at(6)),  # skipped: a response, but not in the CSAT
        cem.response(cid, 2, "ces", at=at(7)),
        cem.response(cid, 5, "ces", at=at(8)),
        cem.feedback(cid, "older words", at=at(2)),
        cem.feedback(cid, "The parcel was wet", at=at(9), sentiment_label="negative", sentiment_score=-0.5),
        followup,
        cem.throttled(cid, "fatigue", at=at(10)),
        cem.response(other, 10, at=at(11)),  # someone else's
    )

    exp = (await view(client, cid))["experience"]
    nps = exp["latest_nps"]
    assert (nps["score"], nps["category"], nps["scale_min"], nps["scale_max"]) == (3, "detractor", 0, 10)
    assert when(nps["answered_at"]) == at(3) and nps["comment"] == "Delivery was late"
    assert (nps["survey_id"], nps["touchpoint"]) == (str(cem.survey_id), "checkout")
    # CSAT 5, 2, 4 (the skipped one left out): mean 11/3, two of three satisfied.
    assert exp["csat"] == {"average": 3.67, "satisfied_percent": 66.7, "answers": 3}
    assert exp["ces"] == {"average": 3.5, "answers": 2}
    assert exp["responses"] == 8 and when(exp["last_response_at"]) == at(8)
    last = exp["last_feedback"]
    assert (last["text"], last["sentiment_label"], last["sentiment_score"]) == ("The parcel was wet", "negative", -0.5)
    assert when(last["received_at"]) == at(9) and exp["feedback"] == 2
    assert exp["open_followups"] == 1
    invitations = exp["invitations"]
    assert (invitations["sent"], invitations["suppressed"], invitations["last_suppression_reason"]) == (1, 1, "fatigue")
    assert when(invitations["last_sent_at"]) == at(0) and when(invitations["last_suppressed_at"]) == at(10)
    assert when(exp["updated_at"]) == at(10)

    [task] = await followup_tasks(client, cid)
    done = await client.patch(f"/v1/tasks/{task['id']}", json={"status": "completed"}, headers={"If-Match": '"1"'})
    assert done.status_code == 200, done.text
    assert (await view(client, cid))["experience"]["open_followups"] == 0
    [completed] = await events("task.completed")
    assert (completed["data"]["origin"], completed["data"]["origin_ref"]) == ("followup", followup.data["followup_id"])


async def test_an_nps_answer_without_a_score_leaves_the_latest_scored_one_in_the_view(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    await apply_cem(cem.response(cid, 7, at=at(1)), cem.response(cid, None, at=at(2)))
    exp = (await view(client, cid))["experience"]
    assert exp["latest_nps"]["score"] == 7 and exp["latest_nps"]["category"] == "passive"
    assert exp["responses"] == 2 and exp["csat"] is None and exp["ces"] is None and exp["last_feedback"] is None


# --- follow-up tasks --------------------------------------------------------------------------


async def test_a_followup_request_makes_one_high_priority_task_for_the_owner_however_often_it_arrives(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, events: Any, crm_settings: CRMSettings
) -> None:
    cid = uuid.UUID((await make.customer(owner="kim@ourco.example"))["id"])
    announced_before = len(await events())
    request = cem.followup(cid, 3, at=at(0))
    fid = uuid.UUID(request.data["followup_id"])
    await apply_cem(request, request)  # twice in one poll
    await apply_cem(request)  # and again later
    await apply_cem(cem.followup(cid, 3, at=at(0), followup_id=fid))  # re-published under a new event id

    [task] = await followup_tasks(client, cid)
    assert task["title"] == "Call back: NPS 3 (detractor) at checkout"
    assert (task["priority"], task["owner"], task["status"]) == ("high", "kim@ourco.example", "open")
    assert (task["origin"], task["origin_ref"]) == ("followup", str(fid))
    assert when(task["due_at"]) == at(crm_settings.followup_due_hours)
    assert "NPS 3 on 0-10 (detractor)" in task["description"] and "Delivery was late" in task["description"]
    assert len(await events()) == announced_before  # making it announces nothing (as a POST /v1/tasks would not)
    assert len((await view(client, cid))["open_tasks"]) == 1

    duplicate = {"customer_id": str(cid), "title": "Again", "origin": "followup", "origin_ref": str(fid)}
    assert (await client.post("/v1/tasks", json=duplicate)).status_code == 409
    unrelated = {"customer_id": str(cid), "title": "Another", "origin": "followup", "origin_ref": str(uuid.uuid4())}
    assert (await client.post("/v1/tasks", json=unrelated)).status_code == 201


async def test_followup_titles_name_the_metric_the_score_and_the_touchpoint(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    await apply_cem(
        cem.followup(cid, 2, metric="csat", survey_kind="csat", touchpoint=None, at=at(0)),
        cem.followup(cid, 1, metric=None, survey_kind="ces", touchpoint="support", comment=None, at=at(1)),
    )
    tasks = {t["title"]: t for t in await followup_tasks(client, cid)}
    assert set(tasks) == {"Call back: CSAT 2 (dissatisfied)", "Call back: CES 1 (high effort) at support"}
    assert "The customer wrote" not in tasks["Call back: CES 1 (high effort) at support"]["description"]
    assert tasks["Call back: CSAT 2 (dissatisfied)"]["owner"] is None  # the customer has no owner


# --- which customer an event lands on -------------------------------------------------------


async def test_events_without_a_customer_are_ignored_and_unknown_customers_are_refused(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, session_factory: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    anonymous = (cem.invited(None, email="someone@example.com"), cem.response(None, 8), cem.feedback(None, "anonymous words"))
    assert await apply_cem(*anonymous) == 0
    missing = uuid.uuid4()
    with pytest.raises(PermanentEventError, match=f"unknown customer_id: {missing}"):
        await apply_cem(cem.response(cid, 9), cem.followup(missing))
    async with session_factory() as session:  # the poll's transaction rolled back: nothing of it stays
        assert await session.scalar(select(func.count()).select_from(ExperienceEvent)) == 0
        assert await session.scalar(select(func.count()).select_from(Task)) == 0


async def test_merge_moves_the_experience_to_the_survivor_and_later_events_for_the_duplicate_follow_it(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any
) -> None:
    survivor = uuid.UUID((await make.customer(owner="sam"))["id"])
    duplicate = uuid.UUID((await make.customer(owner="lee"))["id"])
    await apply_cem(
        cem.response(survivor, 10, at=at(0)), cem.response(duplicate, 6, at=at(1)), cem.followup(duplicate, 6, at=at(1))
    )
    r = await client.post(f"/v1/customers/{survivor}/merge", json={"duplicate_id": str(duplicate)})
    assert r.status_code == 200, r.text
    exp = (await view(client, survivor))["experience"]
    assert exp["responses"] == 2 and exp["latest_nps"]["score"] == 6 and exp["open_followups"] == 1

    await apply_cem(cem.feedback(duplicate, "sent to the old id", at=at(2)), cem.followup(duplicate, 4, at=at(2)))
    exp = (await view(client, survivor))["experience"]
    assert exp["last_feedback"]["text"] == "sent to the old id" and exp["open_followups"] == 2
    newest = [t for t in await followup_tasks(client, survivor) if "NPS 4" in t["title"]]
    assert [t["owner"] for t in newest] == ["sam"]  # the survivor's owner calls back
    kinds = [e["kind"] for e in await timeline(client, survivor, kind=["survey.response.submitted", "feedback.received"])]
    assert kinds == ["feedback.received", "survey.response.submitted", "survey.response.submitted"]
    assert (await client.get(f"/v1/customers/{duplicate}/view")).status_code == 308


async def test_events_for_an_erased_customer_keep_no_words_and_make_no_task(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    assert (await client.delete(f"/v1/customers/{cid}")).status_code == 204
    stored = await apply_cem(
        cem.feedback(cid, "my private words", at=at(0)),
        cem.response(cid, 2, at=at(1), comment="more private words"),
        cem.followup(cid, 2, at=at(1)),
    )
    assert stored == 3
    assert await followup_tasks(client, cid) == []
    exp = (await view(client, cid))["experience"]
    assert exp["responses"] == 1 and exp["latest_nps"]["score"] == 2 and exp["latest_nps"]["comment"] is None
    assert exp["last_feedback"]["text"] is None
    entries = await timeline(client, cid)
    assert {e["kind"] for e in entries} == {
        "feedback.received",
        "survey.response.submitted",
        "followup.requested",
        "customer_changed",  # the erasure itself, without the values it erased
    }
    assert all(e.get("text") is None and e.get("comment") is None for e in entries)
    (erasure,) = [e for e in entries if e["kind"] == "customer_changed"]
    assert erasure["via"] == "erasure"
    assert all(c["from"] is None and c["to"] is None for c in erasure["changes"] if c["field"] in ("email", "name"))


async def test_events_consumed_while_their_customer_is_merged_land_on_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, cem: Any, apply_cem: Any
) -> None:
    """The duplicate was read unlocked while the merge held it: the answer and the follow-up task
    went in on the duplicate once the merge was done, where the survivor's view never sees them."""
    survivor = uuid.UUID((await make.customer(owner="sam"))["id"])
    duplicate = uuid.UUID((await make.customer(owner="lee"))["id"])

    async def consume() -> Any:
        return await apply_cem(cem.response(duplicate, 3, at=at(0), comment="slow"), cem.followup(duplicate, 3, at=at(0)))

    assert await sent_during(crm_app, merge(crm_app, str(survivor), str(duplicate)), consume) == 2
    exp = (await view(client, survivor))["experience"]
    assert (exp["responses"], exp["latest_nps"]["score"], exp["open_followups"]) == (1, 3, 1)
    assert [(t["customer_id"], t["owner"]) for t in await followup_tasks(client, survivor)] == [(str(survivor), "sam")]
    assert await followup_tasks(client, duplicate) == []


async def test_events_consumed_while_their_customer_is_erased_keep_no_words_and_make_no_task(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, cem: Any, apply_cem: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])

    async def consume() -> Any:
        return await apply_cem(
            cem.feedback(cid, "my private words", at=at(0)),
            cem.response(cid, 2, at=at(1), comment="more private words"),
            cem.followup(cid, 2, at=at(1)),
        )

    assert await sent_during(crm_app, erase(crm_app, str(cid)), consume) == 3
    assert await followup_tasks(client, cid) == []
    exp = (await view(client, cid))["experience"]
    assert (exp["responses"], exp["latest_nps"]["comment"], exp["last_feedback"]["text"]) == (1, None, None)


async def test_values_no_row_can_hold_are_refused_before_anything_is_written(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    naive = cem.response(cid, 9)
    naive.data["submitted_at"] = "2026-11-01T10:00:00"
    long_id = cem.feedback(cid)
    long_id.id = "e" * 256
    huge_scale = cem.response(cid, 9)
    huge_scale.data["scale_max"] = 2**40
    long_touchpoint = cem.response(cid, 9)
    long_touchpoint.data["touchpoint"] = "t" * 101
    long_reason = cem.throttled(cid, "throttled")
    long_reason.data["reason"] = "r" * 501
    not_finite = cem.response(cid, 9)
    not_finite.data["score"] = "NaN"  # a JSON string pydantic reads as a float
    with pytest.raises(PermanentEventError, match="score is not a finite number"):
        await apply_cem(not_finite)
    # Refused when decoded, as the published schema refuses them (`cxkit.events`): the payloads'
    # text lengths are this projection's columns.
    for bad, reason in (
        (long_touchpoint, "touchpoint: String should have at most 100 characters"),
        (long_reason, "reason: String should have at most 500 characters"),
        (naive, "submitted_at: Input should be an RFC 3339 time with an offset"),
        (cem.feedback(cid, "a\x00b"), "invalid feedback.received event: data.text: text must not contain NUL characters"),
        (huge_scale, "scale_max: Input should be less than or equal to 2147483647"),
        (long_id, "id: String should have at most 255 characters"),
    ):
        with pytest.raises(InvalidEvent, match=reason):
            await apply_cem(bad)
    assert (await view(client, cid))["experience"] is None
    assert await apply_cem(cem.response(cid, 9, scale_min=-(2**31), scale_max=2**31 - 1)) == 1  # the ends fit


# --- the timeline -----------------------------------------------------------------------------


async def test_the_timeline_shows_each_cem_event_as_its_own_kind_in_time_order_with_the_rest(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    await make.interaction(customer_id=str(cid), type="purchase", touchpoint="checkout", occurred_at=at(-1).isoformat())
    invited = cem.invited(cid, at=at(0))
    answered = cem.response(cid, 3, at=at(1), comment="Late again")
    followup = cem.followup(cid, 3, at=at(1.5))
    await apply_cem(
        invited, answered, followup, cem.feedback(cid, "Wet parcel", at=at(2)), cem.throttled(cid, "survey_throttle", at=at(3))
    )

    entries = await timeline(client, cid)
    assert [e["kind"] for e in entries] == [
        "task_created",  # the follow-up task, made now
        "survey.throttled",
        "feedback.received",
        "followup.requested",
        "survey.response.submitted",
        "survey.invited",
        "interaction",
    ]
    times = [when(e["at"]) for e in entries]
    assert times == sorted(times, reverse=True)
    task_created, throttled, feedback, requested, response, invitation, _ = entries
    assert (throttled["reason"], throttled["survey_id"], throttled["touchpoint"]) == (
        "survey_throttle",
        str(cem.survey_id),
        "checkout",
    )
    assert (feedback["text"], feedback["sentiment_label"], feedback["channel"]) == ("Wet parcel", "positive", "email")
    assert (requested["followup_id"], requested["score"], requested["comment"]) == (
        followup.data["followup_id"],
        3,
        "Delivery was late",
    )
    assert requested["task_id"] == task_created["id"] and requested["task_status"] == "open"
    assert (response["response_id"], response["metric"], response["category"], response["comment"]) == (
        answered.data["response_id"],
        "nps",
        "detractor",
        "Late again",
    )
    assert (invitation["invitation_id"], invitation["survey_name"], invitation["channel"]) == (
        invited.data["invitation_id"],
        "Checkout NPS",
        "email",
    )

    only = await timeline(client, cid, kind=["survey.throttled", "survey.invited"])
    assert [e["kind"] for e in only] == ["survey.throttled", "survey.invited"]
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/customers/{cid}/timeline", params=params)).json()
        paged += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert paged == entries


async def test_reminders_and_a_withdrawn_invitation_are_counted_in_the_view_and_shown_on_the_timeline_once(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any
) -> None:
    cid = uuid.UUID((await make.customer())["id"])
    invited = cem.invited(cid, at=at(0))
    invitation_id = invited.data["invitation_id"]
    first, second = cem.reminded(cid, invitation_id, 1, at=at(48)), cem.reminded(cid, invitation_id, 2, at=at(96))
    withdrawn = cem.cancelled(cid, invitation_id, at=at(100), sent_at=at(0))
    assert await apply_cem(invited, first, second, withdrawn) == 4
    # The same reminder or withdrawal announced again, under new event ids, is not a second row.
    again = [cem.reminded(cid, invitation_id, 2, at=at(96)), cem.cancelled(cid, invitation_id, at=at(100), sent_at=at(0))]
    assert await apply_cem(*again) == 0

    invitations = (await view(client, cid))["experience"]["invitations"]
    assert (invitations["sent"], invitations["reminders"], invitations["cancelled"]) == (1, 2, 1)
    assert when(invitations["last_reminded_at"]) == at(96) and when(invitations["last_cancelled_at"]) == at(100)

    entries = await timeline(client, cid)
    assert [e["kind"] for e in entries] == [
        "survey.invitation_cancelled",
        "survey.reminded",
        "survey.reminded",
        "survey.invited",
    ]
    cancelled, latest, earliest, _ = entries
    assert (cancelled["invitation_id"], cancelled["reason"], cancelled["survey_name"], cancelled["channel"]) == (
        invitation_id,
        "by_request",
        "Checkout NPS",
        "email",
    )
    assert when(cancelled["at"]) == at(100)
    assert [(e["invitation_id"], e["reminder"], when(e["at"])) for e in (latest, earliest)] == [
        (invitation_id, 2, at(96)),
        (invitation_id, 1, at(48)),
    ]
    only = await timeline(client, cid, kind=["survey.reminded"])
    assert [e["reminder"] for e in only] == [2, 1]

    # A customer with no reminder or withdrawal shows zeros, not nulls.
    other = uuid.UUID((await make.customer())["id"])
    await apply_cem(cem.invited(other, at=at(0)))
    plain = (await view(client, other))["experience"]["invitations"]
    assert (plain["reminders"], plain["last_reminded_at"], plain["cancelled"], plain["last_cancelled_at"]) == (0, None, 0, None)


# --- performance --------------------------------------------------------------------------


async def test_a_poll_of_mixed_events_is_applied_with_a_handful_of_statements(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, crm_app: FastAPI, session_factory: Any
) -> None:
    """300 events for 10 customers, 60 of them follow-up requests: three statements."""
    customers = [uuid.UUID((await make.customer(owner="kim"))["id"]) for _ in range(10)]
    batch = []
    for i in range(300):
        cid = customers[i % 10]
        kind = i % 5
        if kind == 4:
            batch.append(cem.response(cid, i % 11))
        else:
            batch.append((cem.invited, cem.throttled, cem.feedback, cem.followup)[kind](cid))
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    engine = crm_app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert await apply_cem(*batch) == 300
    finally:
        event.remove(engine, "before_cursor_execute", count)
    work = [s for s in statements if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))]
    assert len(work) <= 3, work
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Task).where(Task.origin == "followup")) == 60


# --- erasure ----------------------------------------------------------------------------------


async def test_erasure_leaves_no_personal_string_in_any_column_of_any_table(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, session_factory: Any, crm_settings: CRMSettings
) -> None:
    marker = uuid.uuid4().hex[:10]
    email = f"erin.{marker}@example.com"
    created = await client.post(
        "/v1/customers",
        json={"email": email, "name": f"Erin {marker}", "phone": f"+31 {marker}", "company": f"Erin {marker} BV"},
        headers={"Idempotency-Key": f"create-{marker}"},
    )
    assert created.status_code == 201
    cid = created.json()["id"]
    lead = (
        await client.post(
            "/v1/leads",
            json={"email": email, "name": f"Erin {marker}", "company": f"Lead {marker} BV", "notes": f"met {marker}"},
            headers={"Idempotency-Key": f"lead-{marker}"},  # its stored answer names the person by email only
        )
    ).json()
    converted = await client.post(f"/v1/leads/{lead['id']}/convert", json={"customer_id": cid})
    assert converted.status_code == 200, converted.text
    await client.post(
        "/v1/interactions",
        json={"customer_id": cid, "type": "call", "summary": f"called {marker}", "metadata": {"note": marker}},
        headers={"Idempotency-Key": f"call-{marker}"},
    )
    deal = await make.deal(cid, title=f"Kitchen for {marker}")
    await make.move(deal["id"], status="lost", lost_reason=f"{marker} went elsewhere")
    await make.task(cid, title=f"Call {marker}", description=f"about {marker}")
    await apply_cem(
        cem.response(uuid.UUID(cid), 4, at=at(0), comment=f"comment {marker}"),
        cem.feedback(uuid.UUID(cid), f"feedback {marker}", at=at(1)),
        cem.followup(uuid.UUID(cid), 4, at=at(0), comment=f"comment {marker}"),
        cem.invited(uuid.UUID(cid), at=at(0)),
    )
    async with session_factory() as session, session.begin():  # what the relay does once the broker took them
        await session.execute(update(OutboxMessage).values(sent_at=utcnow()))
    assert await columns_holding(crm_settings.database_url, marker)  # the probe sees the data before

    assert (await client.delete(f"/v1/customers/{cid}")).status_code == 204

    assert await columns_holding(crm_settings.database_url, marker) == []
    exp = (await view(client, cid))["experience"]  # the anonymous scores still count
    assert exp["latest_nps"]["score"] == 4 and exp["responses"] == 1 and exp["feedback"] == 1


async def columns_holding(database_url: str, needle: str) -> list[str]:
    """Every table.column (text, varchar, json, jsonb, bytea) of the database holding `needle`."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea')"
        )
        hits = []
        for col in columns:
            name = f'"{col["column_name"]}"'
            expr = f"position($1::bytea in {name}) > 0" if col["data_type"] == "bytea" else f"strpos({name}::text, $1) > 0"
            arg: Any = needle.encode() if col["data_type"] == "bytea" else needle
            if await conn.fetchval(f'SELECT count(*) FROM "{col["table_name"]}" WHERE {expr}', arg):
                hits.append(f"{col['table_name']}.{col['column_name']}")
        return sorted(hits)
    finally:
        await conn.close()


# --- the consumer on the real broker ----------------------------------------------------------


async def test_the_consumer_applies_cem_events_from_the_broker_once_and_dead_letters_unknown_customers(
    client: httpx.AsyncClient,
    make: Any,
    cem: Any,
    kafka: Any,
    feedback_consumer: Any,
    session_factory: Any,
) -> None:
    name, topic = feedback_consumer.name, feedback_consumer.topic
    cid = uuid.UUID((await make.customer(owner="kim@ourco.example"))["id"])
    followup = cem.followup(cid, 2, at=at(1))
    unknown = cem.response(uuid.uuid4(), 5)
    last = cem.feedback(cid, "the last one", at=at(5))
    await kafka.produce(
        topic,
        [
            encode_event(cem.invited(cid, at=at(0))),
            encode_event(cem.response(cid, 2, at=at(1))),
            encode_event(followup),
            encode_event(followup),  # delivered twice
            encode_event(cem.followup(cid, 2, at=at(1), followup_id=uuid.UUID(followup.data["followup_id"]))),
            encode_event(unknown),
            encode_event(cem.feedback(None, "anonymous")),
            b"{not json",
            encode_event(last),
        ],
    )

    async def last_applied() -> Any:
        exp = (await view(client, cid))["experience"]
        return exp if exp and exp["last_feedback"] and exp["last_feedback"]["text"] == "the last one" else None

    exp = await wait_for(last_applied, 15)
    assert exp["responses"] == 1 and exp["invitations"]["sent"] == 1 and exp["open_followups"] == 1
    [task] = await followup_tasks(client, cid)
    assert task["owner"] == "kim@ourco.example" and task["origin_ref"] == followup.data["followup_id"]
    async with session_factory() as session:
        kinds = (await session.scalars(select(ExperienceEvent.kind).order_by(ExperienceEvent.occurred_at))).all()
    assert kinds == ["survey.invited", "survey.response.submitted", "followup.requested", "feedback.received"]
    reasons = await kafka.dlq_reasons(f"{topic}.dlq", name, expected=2)
    assert f"unknown customer_id: {unknown.data['customer_id']}" in reasons[encode_event(unknown)]
    assert "not JSON" in reasons[b"{not json"]
