"""GET /v1/tasks/export: the task list as a streamed, spreadsheet-safe CSV, with the list's filters
and order."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from crm.tasks.schemas import TaskRead
from cxkit import testing
from cxkit.testing import bearer

HEADER = list(TaskRead.model_fields)


async def test_the_export_has_the_tasks_the_list_shows_in_its_order_safe_for_spreadsheets(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    customer = (await make.customer())["id"]
    other = (await make.customer())["id"]
    deal = await make.deal(customer)
    now = dt.datetime.now(dt.UTC)
    tasks = []
    for n, (hours, owner, priority) in enumerate(
        [(-5, "sam", "high"), (3, "kim", "normal"), (1, "sam", "low"), (None, "sam", "normal")]
    ):
        due = None if hours is None else (now + dt.timedelta(hours=hours)).isoformat()
        tasks.append(await make.task(customer, title=f"Task {n}", due_at=due, owner=owner, priority=priority, deal_id=deal["id"]))
    formula = await make.task(other, title='=HYPERLINK("http://x")', owner="sam")
    assert (await client.patch(f"/v1/tasks/{tasks[1]['id']}", json={"status": "completed"})).status_code == 200

    for params in (
        {"customer_id": customer},
        {"customer_id": customer, "sort": "-created_at"},
        {"owner": "sam", "status": "open", "customer_id": customer},
        {"deal_id": deal["id"], "due_before": now.isoformat()},  # the overdue list
        {"customer_id": other},
        {"customer_id": customer, "sort": "updated_at", "status": "completed"},
    ):
        r = await client.get("/v1/tasks/export", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"].startswith('attachment; filename="tasks-')
        rows = testing.csv_records(r, HEADER)
        listed = await testing.every_item(client, "/v1/tasks", **params)
        assert [row["id"] for row in rows] == [task["id"] for task in listed] and rows, params
    due_first = testing.csv_records(await client.get("/v1/tasks/export", params={"customer_id": customer}), HEADER)
    assert [row["title"] for row in due_first] == ["Task 0", "Task 2", "Task 1", "Task 3"]  # undated last
    assert (due_first[0]["priority"], due_first[0]["owner"], due_first[0]["deal_id"], due_first[0]["version"]) == (
        "high",
        "sam",
        deal["id"],
        "1",
    )
    assert due_first[2]["status"] == "completed" and due_first[2]["completed_at"]
    [cell] = testing.csv_records(await client.get("/v1/tasks/export", params={"customer_id": other}), HEADER)
    assert cell["id"] == formula["id"] and cell["title"] == '\'=HYPERLINK("http://x")'

    empty = await client.get("/v1/tasks/export", params={"owner": "nobody-owns-these"})
    assert empty.status_code == 200 and empty.text.splitlines() == [",".join(HEADER)]
    assert (await client.get("/v1/tasks/export", params={"status": "maybe"})).status_code == 422
    assert (await client.get("/v1/tasks/export", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/v1/tasks/export", headers=bearer(keys["read"]))).status_code == 200
    refused = await client.delete("/v1/tasks/export")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
