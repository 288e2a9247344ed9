"""Follow-up SLAs on the CRM side: a follow-up task is due when the CEM's SLA says, and a
`followup.overdue` escalates its task (a second owner, urgent priority) exactly once."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx

from crm.config import CRMSettings
from crm.consumers.cem_feedback import live_handlers
from crm.experience.models import FOLLOWUP_OVERDUE
from cxkit.events import CloudEvent, encode_event
from cxkit.testing import wait_for

from .conftest import ESCALATION_OWNER, delivery

T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)


async def followup_task(client: httpx.AsyncClient, followup_id: str) -> dict[str, Any]:
    r = await client.get("/v1/tasks", params={"origin": "followup", "origin_ref": followup_id})
    assert r.status_code == 200, r.text
    [task] = r.json()["items"]
    return task  # type: ignore[no-any-return]


async def test_the_task_is_due_when_the_cem_sla_says_and_an_overdue_report_escalates_it_once(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, session_factory: Any, crm_settings: CRMSettings
) -> None:
    cid = uuid.UUID((await make.customer(owner="kim@ourco.example"))["id"])
    due = T0 + dt.timedelta(hours=4)
    request = cem.followup(cid, 2, at=T0, due_at=due)
    await apply_cem(request)
    fid = request.data["followup_id"]
    task = await followup_task(client, fid)
    assert dt.datetime.fromisoformat(task["due_at"]) == due  # the CEM's SLA, not CRM_FOLLOWUP_DUE_HOURS
    assert (task["priority"], task["escalated_to"], task["escalated_at"], task["version"]) == ("high", None, None, 1)

    escalate = live_handlers(crm_settings.model_copy(update={"followup_escalation_owner": ESCALATION_OWNER}))[FOLLOWUP_OVERDUE]

    async def report(*events: CloudEvent) -> None:
        async with session_factory() as session, session.begin():
            await escalate(session, [delivery(e) for e in events])

    overdue = cem.overdue(request, at=due + dt.timedelta(minutes=1))
    await report(overdue, overdue)  # twice in one poll
    escalated = await followup_task(client, fid)
    assert (escalated["owner"], escalated["escalated_to"], escalated["priority"]) == (
        "kim@ourco.example",
        ESCALATION_OWNER,
        "urgent",
    )
    assert escalated["escalated_at"] is not None and escalated["version"] == 2
    await report(overdue)  # redelivered later
    await report(cem.overdue(request))  # the same report under a new event id
    assert await followup_task(client, fid) == escalated
    assert len((await client.get(f"/v1/customers/{cid}/view")).json()["open_tasks"]) == 1


async def test_an_overdue_report_leaves_a_completed_task_and_an_unknown_followup_alone(
    client: httpx.AsyncClient, make: Any, cem: Any, apply_cem: Any, session_factory: Any, crm_settings: CRMSettings
) -> None:
    cid = uuid.UUID((await make.customer(owner="kim@ourco.example"))["id"])
    request = cem.followup(cid, 1, at=T0)
    await apply_cem(request)
    fid = request.data["followup_id"]
    task = await followup_task(client, fid)
    done = await client.patch(f"/v1/tasks/{task['id']}", json={"status": "completed"}, headers={"If-Match": '"1"'})
    assert done.status_code == 200, done.text
    escalate = live_handlers(crm_settings)[FOLLOWUP_OVERDUE]
    stray = cem.followup(cid, 1, at=T0)  # a follow-up the CRM never made a task for
    async with session_factory() as session, session.begin():
        await escalate(session, [delivery(cem.overdue(request)), delivery(cem.overdue(stray))])
    after = await followup_task(client, fid)
    assert (after["status"], after["priority"], after["escalated_at"]) == ("completed", "high", None)
    assert after["version"] == done.json()["version"]


async def test_the_consumer_escalates_an_overdue_followup_from_the_broker_once(
    client: httpx.AsyncClient, make: Any, cem: Any, kafka: Any, feedback_consumer: Any
) -> None:
    cid = uuid.UUID((await make.customer(owner="kim@ourco.example"))["id"])
    request = cem.followup(cid, 3, at=T0)
    overdue = cem.overdue(request)
    await kafka.produce(
        feedback_consumer.topic,
        [
            encode_event(request),
            encode_event(overdue),
            encode_event(overdue),  # delivered twice
            encode_event(cem.overdue(request)),  # re-announced under a new event id
        ],
    )
    fid = request.data["followup_id"]

    async def escalated() -> dict[str, Any] | None:
        r = await client.get("/v1/tasks", params={"origin": "followup", "origin_ref": fid})
        items = r.json()["items"]
        return items[0] if items and items[0]["escalated_at"] else None

    task = await wait_for(escalated, 15)
    assert (task["escalated_to"], task["priority"], task["owner"]) == (ESCALATION_OWNER, "urgent", "kim@ourco.example")
    # One more event behind them, so the duplicates have certainly been consumed too.
    last = cem.feedback(cid, "after the escalation")
    await kafka.produce(feedback_consumer.topic, [encode_event(last)])

    async def last_applied() -> Any:
        exp = (await client.get(f"/v1/customers/{cid}/view")).json()["experience"]
        return exp if exp and exp["last_feedback"] and exp["last_feedback"]["text"] == "after the escalation" else None

    await wait_for(last_applied, 15)
    assert (await followup_task(client, fid))["version"] == 2
