"""Tasks: follow-ups with an owner, a due time and a status; completion is announced."""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from crm.tasks import service
from crm.tasks.models import Task
from cxkit.testing import bearer

from .customer_races import erase, merge, sent_during


async def test_owner_defaults_to_the_customers_owner_and_a_deal_implies_its_customer(
    client: httpx.AsyncClient, make: Any
) -> None:
    customer = await make.customer(owner="kim")
    task = await make.task(customer["id"], due_at="2026-12-01T09:00:00Z", priority="high")
    assert (task["owner"], task["status"], task["origin"], task["version"]) == ("kim", "open", "manual", 1)
    explicit = await make.task(customer["id"], owner=None)
    assert explicit["owner"] is None
    deal = await make.deal(customer["id"])
    on_deal = (await client.post("/v1/tasks", json={"deal_id": deal["id"], "title": "Send contract"})).json()
    assert on_deal["customer_id"] == customer["id"] and on_deal["deal_id"] == deal["id"]


async def test_task_input_and_references_are_checked(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer()
    other_deal = await make.deal()
    for body in (
        {"title": "No customer"},
        {"customer_id": customer["id"], "title": ""},
        {"customer_id": customer["id"], "title": "t", "due_at": "tomorrow"},
        {"customer_id": customer["id"], "title": "t", "due_at": "2026-12-01T09:00:00"},
        {"customer_id": customer["id"], "title": "t", "priority": "urgent"},
        {"customer_id": customer["id"], "title": "t", "origin": "Bad Origin"},
        {"customer_id": str(uuid.uuid4()), "title": "t"},
        {"deal_id": str(uuid.uuid4()), "title": "t"},
        {"customer_id": customer["id"], "deal_id": other_deal["id"], "title": "t"},
    ):
        assert (await client.post("/v1/tasks", json=body)).status_code == 422, body
    elsewhere = await client.post("/v1/tasks", json={"customer_id": customer["id"], "deal_id": other_deal["id"], "title": "t"})
    assert elsewhere.json()["detail"] == "body.deal_id: the deal belongs to another customer"
    assert elsewhere.json()["errors"] == [
        {"loc": ["body", "deal_id"], "msg": "the deal belongs to another customer", "type": "reference"}
    ]


async def test_completing_a_task_records_who_and_when_and_announces_it_once(
    client: httpx.AsyncClient, make: Any, events: Any, keys: dict[str, str]
) -> None:
    customer = await make.customer()
    task = await make.task(customer["id"], origin="cem.followup", origin_ref="f-123")
    path = f"/v1/tasks/{task['id']}"
    done = await client.patch(path, json={"status": "completed"}, headers={**bearer(keys["write"]), "If-Match": '"1"'})
    assert done.status_code == 200, done.text
    body = done.json()
    assert (
        body["status"] == "completed" and body["completed_at"] and body["completed_by"] == "test-write" and body["version"] == 2
    )
    again = await client.patch(path, json={"status": "completed"})
    assert again.json()["version"] == 2
    [announced] = await events("task.completed")
    assert announced["subject"] == customer["id"] and announced["_topic"] == "crm.customers.v1"
    data = announced["data"]
    assert (data["task_id"], data["customer_id"], data["origin"], data["origin_ref"], data["completed_by"]) == (
        task["id"],
        customer["id"],
        "cem.followup",
        "f-123",
        "test-write",
    )
    reopened = (await client.patch(path, json={"status": "open"})).json()
    assert (reopened["status"], reopened["completed_at"], reopened["completed_by"]) == ("open", None, None)
    assert (await client.patch(path, json={"status": "completed"}, headers={"If-Match": '"2"'})).status_code == 412
    await client.patch(path, json={"status": "completed"})
    assert len(await events("task.completed")) == 2


async def test_task_list_puts_the_most_urgent_first_and_filters(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer()
    later = await make.task(customer["id"], due_at="2026-12-05T09:00:00Z", owner="sam")
    sooner = await make.task(customer["id"], due_at="2026-12-01T09:00:00Z", owner="sam")
    undated = await make.task(customer["id"], owner="sam")
    await make.task(customer["id"], due_at="2026-11-01T09:00:00Z", owner="kim")
    mine = (await client.get("/v1/tasks", params={"owner": "sam"})).json()["items"]
    assert [t["id"] for t in mine] == [sooner["id"], later["id"], undated["id"]]
    overdue = (await client.get("/v1/tasks", params={"status": "open", "due_before": "2026-12-02T00:00:00Z"})).json()["items"]
    assert len(overdue) == 2
    page = (await client.get("/v1/tasks", params={"owner": "sam", "limit": 2})).json()
    rest = (await client.get("/v1/tasks", params={"owner": "sam", "cursor": page["next_cursor"]})).json()
    assert [t["id"] for t in page["items"] + rest["items"]] == [sooner["id"], later["id"], undated["id"]]


async def test_concurrent_task_creates_with_one_idempotency_key_make_one_task(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    customer = await make.customer()
    body = {"customer_id": customer["id"], "title": "Once"}
    answers = await asyncio.gather(
        *[client.post("/v1/tasks", json=body, headers={"Idempotency-Key": "task-race"}) for _ in range(8)]
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Task)) == 1
    other = await client.post("/v1/tasks", json={**body, "title": "Other"}, headers={"Idempotency-Key": "task-race"})
    assert other.status_code == 422


async def test_deleting_a_task(client: httpx.AsyncClient, make: Any) -> None:
    task = await make.task((await make.customer())["id"])
    assert (await client.delete(f"/v1/tasks/{task['id']}", headers={"If-Match": '"9"'})).status_code == 412
    assert (await client.delete(f"/v1/tasks/{task['id']}")).status_code == 204
    assert (await client.get(f"/v1/tasks/{task['id']}")).status_code == 404


# --- an erase, a merge or a deal deletion meanwhile ------------------------------------------


async def test_a_task_created_while_its_customer_is_erased_is_refused_as_erased(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    """The customer was read as live while the erase held its row: the task went in once the
    erase was done, on an erased customer. Now it answers what it answers afterwards."""
    customer = await make.customer()
    post = functools.partial(client.post, "/v1/tasks", json={"customer_id": customer["id"], "title": "Call back"})
    answer = await sent_during(crm_app, erase(crm_app, customer["id"]), post)
    assert answer.status_code == 422 and answer.json()["errors"][0]["msg"] == "erased", answer.text
    assert (await client.get("/v1/tasks", params={"customer_id": customer["id"]})).json()["items"] == []
    assert (await post()).status_code == 422


async def test_a_task_created_while_its_customer_is_merged_lands_on_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    survivor, duplicate = await make.customer(owner="kim"), await make.customer(owner="sam")
    post = functools.partial(client.post, "/v1/tasks", json={"customer_id": duplicate["id"], "title": "Call back"})
    answer = await sent_during(crm_app, merge(crm_app, survivor["id"], duplicate["id"]), post)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["customer_id"], answer.json()["owner"]) == (survivor["id"], "kim")
    assert (await client.get("/v1/tasks", params={"customer_id": duplicate["id"]})).json()["items"] == []
    assert (await post()).json()["customer_id"] == survivor["id"]  # what the same request gives afterwards


async def _deal_deleted_once_checked(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deal a task names is deleted (by a DELETE of its own, committed) just after the task
    write found it: the window between the check and the write, opened wide."""
    found = service._deal

    async def then_deleted(session: Any, deal_id: uuid.UUID) -> Any:
        deal = await found(session, deal_id)
        assert (await client.delete(f"/v1/deals/{deal_id}")).status_code == 204
        return deal

    monkeypatch.setattr(service, "_deal", then_deleted)


async def test_a_task_for_a_deal_deleted_meanwhile_is_refused_as_a_missing_deal(
    client: httpx.AsyncClient, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was a 409 `a manual task for None already exists` (every integrity error was taken
    for the follow-up rule) and, for a PATCH, a 500."""
    customer = await make.customer()
    task = await make.task(customer["id"])
    created_deal, patched_deal = await make.deal(customer["id"]), await make.deal(customer["id"])
    await _deal_deleted_once_checked(client, monkeypatch)
    created = await client.post("/v1/tasks", json={"deal_id": created_deal["id"], "title": "Send contract"})
    patched = await client.patch(f"/v1/tasks/{task['id']}", json={"deal_id": patched_deal["id"]})
    monkeypatch.undo()
    for answer, deal in ((created, created_deal), (patched, patched_deal)):
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"] == [
            {"loc": ["body", "deal_id"], "msg": f"deal {deal['id']} does not exist", "type": "reference"}
        ]
    # What the same requests answer now the deals are gone.
    assert (await client.post("/v1/tasks", json={"deal_id": created_deal["id"], "title": "t"})).json() == created.json()
    assert (await client.patch(f"/v1/tasks/{task['id']}", json={"deal_id": patched_deal["id"]})).json() == patched.json()
    assert [t["id"] for t in (await client.get("/v1/tasks")).json()["items"]] == [task["id"]]
    assert (await client.get(f"/v1/tasks/{task['id']}")).json()["deal_id"] is None
