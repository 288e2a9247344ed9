"""Issue 12 item 2 end to end: both services as real processes, real PostgreSQL, real broker. A
detractor's follow-up is due by the survey's SLA on both sides; once past it, the CEM's scheduler
announces `followup.overdue` once and the CRM escalates the task."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest

from cxkit.dev_broker import DevBroker
from cxkit.testing import wait_for

from .test_closed_loop import active_nps_survey, answer, known_to_cem, new_customer

pytestmark = pytest.mark.e2e

LEAD = "lead@ourco.example"


async def sql(url: str, query: str) -> Any:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_an_overdue_followup_is_announced_once_and_the_crm_escalates_its_task(
    stack_factory: Any, broker: DevBroker
) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.extra_env = {"CEM_SCHEDULER_INTERVAL_S": "0.3", "CRM_FOLLOWUP_ESCALATION_OWNER": LEAD}
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        customer = await new_customer(crm, owner="kim@ourco.example")
        await known_to_cem(cem, customer["id"])
        survey = await active_nps_survey(cem, followup_sla=[{"max_score": 6, "hours": 2}])
        await answer(cem, survey["id"], customer["id"], 3, "Nobody called back")

        async def followup_task() -> Any:
            r = await crm.get("/v1/tasks", params={"customer_id": customer["id"], "origin": "followup"})
            items = r.json()["items"] if r.status_code == 200 else []
            return items[0] if items else None

        task = await wait_for(followup_task, timeout=15)
        [followup] = (await cem.get(f"/v1/customers/{customer['id']}/experience")).json()["followups"]
        due = dt.datetime.fromisoformat(followup["due_at"])
        assert due == dt.datetime.fromisoformat(followup["created_at"]) + dt.timedelta(hours=2)
        assert dt.datetime.fromisoformat(task["due_at"]) == due  # the CRM keeps the CEM's SLA
        assert (task["priority"], task["escalated_to"]) == ("high", None)

        # Two hours on: the follow-up is past its due time.
        await sql(stack.cem_db, f"UPDATE followups SET due_at = now() - interval '1 minute' WHERE id = '{followup['id']}'")

        async def escalated() -> Any:
            current = await followup_task()
            return current if current and current["escalated_at"] else None

        task = await wait_for(escalated, timeout=20)
        assert (task["escalated_to"], task["priority"], task["owner"]) == (LEAD, "urgent", "kim@ourco.example")
        await asyncio.sleep(1.5)  # several more scheduler rounds
        assert await sql(stack.cem_db, "SELECT count(*) FROM outbox WHERE event_type = 'followup.overdue'") == 1
        assert (await followup_task())["version"] == task["version"]
        [followup] = (await cem.get(f"/v1/customers/{customer['id']}/experience")).json()["followups"]
        assert followup["overdue_at"] is not None
