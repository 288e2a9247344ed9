"""Each service keeps working while the other is down, and catches up after; replaying the
topics rebuilds the projections to the same views."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from cxkit.dev_broker import DevBroker
from cxkit.testing import wait_for

pytestmark = pytest.mark.e2e


async def new_customer(crm: httpx.AsyncClient) -> dict[str, Any]:
    r = await crm.post(
        "/v1/customers", json={"email": f"ind-{uuid.uuid4().hex[:10]}@example.com", "name": "Indie", "owner": "sam@ourco.example"}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def experience(cem: httpx.AsyncClient, customer_id: str) -> Any:
    r = await cem.get(f"/v1/customers/{customer_id}/experience")
    return r.json() if r.status_code == 200 else None


async def crm_experience(crm: httpx.AsyncClient, customer_id: str) -> Any:
    return (await crm.get(f"/v1/customers/{customer_id}/view")).json()["experience"]


async def nps_survey(cem: httpx.AsyncClient) -> str:
    r = await cem.post("/v1/surveys", json={"name": "Relationship NPS", "kind": "nps"})
    assert r.status_code == 201, r.text
    r2 = await cem.patch(f"/v1/surveys/{r.json()['id']}", json={"status": "active"}, headers={"If-Match": r.headers["etag"]})
    assert r2.status_code == 200, r2.text
    return r.json()["id"]


async def test_crm_answers_and_writes_while_cem_is_down_and_cem_catches_up_without_doubles(
    stack_factory: Any, broker: DevBroker
) -> None:
    stack = stack_factory(broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        known = await new_customer(crm)
        await wait_for(lambda: experience(cem, known["id"]), timeout=15)
        survey = await nps_survey(cem)
        r = await cem.post("/v1/responses", json={"survey_id": survey, "customer_id": known["id"], "answers": {"nps": 10}})
        assert r.status_code == 201, r.text
        before = await wait_for(lambda: crm_experience(crm, known["id"]), timeout=15)

    stack.cem.stop()
    async with stack.crm_client() as crm:
        # The CRM answers its joined view from its own copy, and keeps taking writes.
        assert await crm_experience(crm, known["id"]) == before
        later = [await new_customer(crm) for _ in range(5)]
        r = await crm.patch(f"/v1/customers/{known['id']}", json={"lifecycle_stage": "customer"})
        assert r.status_code == 200, r.text

    stack.start_cem()
    async with stack.cem_client() as cem:
        for customer in later:
            await wait_for(lambda c=customer: experience(cem, c["id"]), timeout=30)

        async def updated() -> Any:
            view = await experience(cem, known["id"])
            return view if view and view["customer"]["lifecycle_stage"] == "customer" else None

        view = await wait_for(updated, timeout=30)
        assert view["summary"]["responses"] == 1  # nothing doubled
        metrics = (await cem.get("/metrics")).text
    created = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("events_handled_total{") and 'type="customer.created"' in line
    )
    assert created == 5  # the restarted process applied exactly the 5 it had missed


def run_cli(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


async def test_replay_rebuilds_both_projections_to_the_same_views(stack_factory: Any, private_broker: DevBroker) -> None:
    stack = stack_factory(private_broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        customers = [await new_customer(crm) for _ in range(3)]
        survey = await nps_survey(cem)
        for score, customer in zip([2, 8, 10], customers, strict=True):
            await wait_for(lambda c=customer: experience(cem, c["id"]), timeout=15)
            r = await cem.post(
                "/v1/responses", json={"survey_id": survey, "customer_id": customer["id"], "answers": {"nps": score}}
            )
            assert r.status_code == 201, r.text
        r = await crm.patch(f"/v1/customers/{customers[0]['id']}", json={"company": "Replayed Ltd"})
        assert r.status_code == 200
        await wait_for(lambda: _company_is(cem, customers[0]["id"], "Replayed Ltd"), timeout=15)
        for customer in customers:
            await wait_for(lambda c=customer: crm_experience(crm, c["id"]), timeout=15)
        cem_before = [_stable(await experience(cem, c["id"])) for c in customers]
        crm_before = [await crm_experience(crm, c["id"]) for c in customers]

    stack.stop()
    for module, prefix, db in (("cem.cli", "CEM", stack.cem_db), ("crm.cli", "CRM", stack.crm_db)):
        result = run_cli([module, "replay", "--yes"], stack.env(prefix, db))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "messages replayed" in result.stderr + result.stdout
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        assert [_stable(await experience(cem, c["id"])) for c in customers] == cem_before
        assert [await crm_experience(crm, c["id"]) for c in customers] == crm_before


async def _company_is(cem: httpx.AsyncClient, customer_id: str, company: str) -> bool:
    view = await experience(cem, customer_id)
    return bool(view) and view["customer"]["company"] == company


def _stable(view: dict[str, Any]) -> dict[str, Any]:
    """The view without the time the local copy was last written."""
    view = dict(view)
    view["customer"] = {k: v for k, v in view["customer"].items() if k != "synced_at"}
    return view


async def test_outbox_requeue_recovers_events_a_broker_lost_without_applying_any_twice(
    stack_factory: Any, private_broker: DevBroker
) -> None:
    """What `make run` does at start, and what ops do after restoring a broker that lost data."""
    stack = stack_factory(private_broker.bootstrap)
    stack.start()
    async with stack.crm_client() as crm, stack.cem_client() as cem:
        seen = await new_customer(crm)
        await wait_for(lambda: experience(cem, seen["id"]), timeout=15)
    stack.cem.stop()
    async with stack.crm_client() as crm:
        lost = await new_customer(crm)  # relayed to the broker, then lost with it

        async def relayed() -> bool:
            return 'outbox_backlog{service="crm-service"} 0.0' in (await crm.get("/metrics")).text

        await wait_for(relayed, timeout=15)
    stack.stop()
    private_broker.stop()
    private_broker.start()  # empty: both customers' events are gone

    result = run_cli(["crm.cli", "outbox-requeue"], stack.env("CRM", stack.crm_db))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 event(s) queued" in result.stderr + result.stdout
    stack.start()
    async with stack.cem_client() as cem:
        await wait_for(lambda: experience(cem, lost["id"]), timeout=30)
        metrics = (await cem.get("/metrics")).text
    applied = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("events_handled_total{") and 'type="customer.created"' in line
    )
    skipped = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("events_duplicate_total{"))
    assert applied == 1  # only the lost one; the one the CEM had already applied was skipped
    assert skipped >= 1
