"""End to end: both services as real processes, real PostgreSQL, real broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cem.customers.models import CustomerProfile
from cem.db import ProcessedEvent as CemProcessed
from crm.db import OutboxMessage
from cxkit import testing
from cxkit.db import make_engine, make_session_factory
from cxkit.testing import wait_for

pytestmark = pytest.mark.e2e


async def create_customer(crm: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"email": f"e2e-{uuid.uuid4().hex[:10]}@example.com", "name": "E2E Customer", **fields}
    r = await crm.post("/v1/customers", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def experience(cem: httpx.AsyncClient, customer_id: str) -> dict[str, Any] | None:
    r = await cem.get(f"/v1/customers/{customer_id}/experience")
    return r.json() if r.status_code == 200 else None


def handled_count(metrics_text: str, event_type: str) -> float:
    """Sum of events_handled_total for one event type over all consumers of the process."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("events_handled_total{") and f'type="{event_type}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def count_rows(url: str, model: type) -> int:
    engine = make_engine(url)
    try:
        async with make_session_factory(engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        await engine.dispose()


async def test_crm_takes_writes_while_the_broker_is_down_and_every_event_arrives_once_after(
    stack_factory: Any, broker_behind_proxy: testing.BrokerBehindProxy
) -> None:
    """The broker is away (unreachable, its data kept: an Apache Kafka broker that restarts)
    while the CRM takes writes; once it is back every event reaches the CEM, once.

    The dev broker restarted empty is another case (tests/test_faults.py): a running consumer
    keeps its position in the lost log, so it can skip the first new events of a partition
    unless `outbox-requeue` sends them again, which `make run` does at each start."""
    broker = broker_behind_proxy
    stack = stack_factory(broker.bootstrap)
    await asyncio.to_thread(stack.start)  # the proxy forwards in this loop meanwhile
    try:
        metrics = await _write_while_the_broker_is_away(stack, broker)
    finally:
        await asyncio.to_thread(stack.stop)

    assert await count_rows(stack.cem_db, CustomerProfile) == 11
    assert await count_rows(stack.cem_db, CemProcessed) == 11  # one processed-event row per event
    # The CEM process applied each customer.created exactly once.
    assert handled_count(metrics, "customer.created") == 11


async def _write_while_the_broker_is_away(stack: Any, broker: testing.BrokerBehindProxy) -> str:
    """One customer before, ten while the broker is away; the CEM's metrics once all arrived."""
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        before = await create_customer(crm)
        await wait_for(lambda: experience(cem, before["id"]), timeout=10)

        await broker.cut()
        during = [await create_customer(crm) for _ in range(10)]  # every write answered 201 with no broker

        engine = make_engine(stack.crm_db)
        async with make_session_factory(engine)() as session:
            unsent = await session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None)))
        await engine.dispose()
        assert unsent == 10  # kept safe in the outbox until the broker is back

        await broker.restore()
        try:
            for customer in during:
                await wait_for(lambda c=customer: experience(cem, c["id"]), timeout=60)
        except AssertionError:
            crm_metrics = (await crm.get("/metrics")).text
            cem_metrics = (await cem.get("/metrics")).text
            keep = ("outbox", "events_", "consumer_lag")
            diag = [ln for ln in (crm_metrics + cem_metrics).splitlines() if ln.startswith(keep)]
            missing = [c["id"] for c in during if not await experience(cem, c["id"])]
            diag.append(f"missing: {missing}")
            raise AssertionError("events did not arrive:\n" + "\n".join(diag)) from None
        return (await cem.get("/metrics")).text
