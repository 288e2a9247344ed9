"""`task.overdue`: an open task whose due time passes is announced once per due time, by one
of any number of concurrent passes; a new due time or a reopening may announce it again."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx

from crm.tasks.service import OVERDUE_BATCH, announce_overdue, run_reminders
from cxkit.events.contract import validation_errors


def _ago(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat()


def _ahead(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


async def _announced(events: Any, task_id: str) -> list[dict[str, Any]]:
    return [e for e in await events("task.overdue") if e["data"]["task_id"] == task_id]


async def _pass(session_factory: Any) -> int:
    """Passes until one finds less than a full batch (other tests' overdue tasks share the database)."""
    announced = 0
    while True:
        async with session_factory() as session, session.begin():
            found = await announce_overdue(session)
        announced += found
        if found < OVERDUE_BATCH:
            return announced


async def test_an_overdue_task_is_announced_once_per_due_time(
    client: httpx.AsyncClient, make: Any, events: Any, session_factory: Any
) -> None:
    customer = (await make.customer())["id"]
    deal = await make.deal(customer)
    late = await make.task(customer, title="Call back", owner="sam", priority="high", deal_id=deal["id"], due_at=_ago(hours=1))
    later = await make.task(customer, title="Send offer", due_at=_ahead(hours=2))
    undated = await make.task(customer, title="Some day")
    done = await make.task(customer, title="Done already", due_at=_ago(hours=3))
    assert (await client.patch(f"/v1/tasks/{done['id']}", json={"status": "completed"})).status_code == 200

    assert await _pass(session_factory) >= 1
    [event] = await _announced(events, late["id"])
    assert event["type"] == "task.overdue" and event["subject"] == customer and event["_topic"] == "crm.customers.v1"
    assert not validation_errors({k: v for k, v in event.items() if not k.startswith("_")})
    data = event["data"]
    assert (data["customer_id"], data["deal_id"], data["title"], data["owner"], data["priority"]) == (
        customer,
        deal["id"],
        "Call back",
        "sam",
        "high",
    )
    assert data["due_at"].replace("Z", "+00:00") == late["due_at"].replace("Z", "+00:00")
    assert (data["origin"], data["escalated_to"]) == ("manual", None)
    for task in (later, undated, done):
        assert await _announced(events, task["id"]) == []

    await _pass(session_factory)  # nothing new: announced once
    assert len(await _announced(events, late["id"])) == 1

    # A new due time that has passed too is announced again; one still ahead waits.
    r = await client.patch(f"/v1/tasks/{late['id']}", json={"due_at": _ago(minutes=5)})
    assert r.status_code == 200, r.text
    await _pass(session_factory)
    assert len(await _announced(events, late["id"])) == 2
    assert (await client.patch(f"/v1/tasks/{late['id']}", json={"due_at": _ahead(days=1)})).status_code == 200
    await _pass(session_factory)
    assert len(await _announced(events, late["id"])) == 2

    # Completed, then reopened while still overdue: announced again.
    assert (await client.patch(f"/v1/tasks/{done['id']}", json={"status": "open"})).status_code == 200
    await _pass(session_factory)
    assert len(await _announced(events, done["id"])) == 1


async def test_concurrent_passes_announce_each_task_once(make: Any, events: Any, session_factory: Any) -> None:
    customer = (await make.customer())["id"]
    tasks = [await make.task(customer, title=f"T{i}", due_at=_ago(minutes=10 + i)) for i in range(12)]
    await asyncio.gather(*(_pass(session_factory) for _ in range(4)))
    counts = [len(await _announced(events, t["id"])) for t in tasks]
    assert counts == [1] * 12


async def test_the_reminders_loop_announces_without_being_asked(make: Any, events: Any, session_factory: Any) -> None:
    customer = (await make.customer())["id"]
    task = await make.task(customer, title="Loop", due_at=_ago(seconds=1))
    loop = asyncio.create_task(run_reminders(session_factory, interval_s=0.05))
    try:
        for _ in range(100):
            if await _announced(events, task["id"]):
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert len(await _announced(events, task["id"])) == 1
