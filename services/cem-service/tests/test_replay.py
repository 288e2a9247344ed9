"""`cem replay` rebuilds the customer projection and the interactions from the topics on the real
broker: a damaged projection comes back the same, and a replay never invites anyone."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update

from cem.config import CEMSettings
from cem.customers.models import CustomerProfile
from cem.db import ProcessedEvent
from cem.followups.models import Followup
from cem.invitations.models import Invitation
from cem.projections import projections
from cem.suppressions.models import Suppression
from cem.touchpoints.models import TouchpointInteraction
from cxkit.dev_broker import DevBroker, dev_broker_env
from cxkit.events import encode_event, new_event
from cxkit.events.payloads import (
    CustomerCreated,
    CustomerErased,
    CustomerMerged,
    CustomerSnapshot,
    CustomerUpdated,
    DealStageChanged,
    InteractionRecorded,
    LeadConverted,
    TaskCompleted,
)
from cxkit.replay import replay

from .conftest import snapshot
from .test_event_consumers import publish


def event(event_type: str, data: Any, subject: uuid.UUID | None, source: str = "urn:cx:crm-service") -> tuple[bytes, bytes]:
    key = str(subject).encode() if subject else b"outside"
    return key, encode_event(new_event(event_type, source=source, subject=str(subject) if subject else None, data=data))


def stable(view: dict[str, Any]) -> dict[str, Any]:
    """The view without the time the local copy was last written."""
    return {**view, "customer": {k: v for k, v in view["customer"].items() if k != "synced_at"}}


async def test_replay_rebuilds_a_damaged_projection_to_the_same_views_and_never_invites(
    client: httpx.AsyncClient, make: Any, broker: DevBroker, session_factory: Any, cem_settings: CEMSettings
) -> None:
    settings = cem_settings.model_copy(update={"consumer_group": f"cem-replay-{uuid.uuid4().hex[:8]}"})
    kind = f"visit-{uuid.uuid4().hex[:6]}"
    await make.survey("nps", trigger={"interaction_type": kind, "throttle_days": 0})  # matches, but a replay never invites
    ada, dup, erin = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = dt.datetime.now(dt.UTC)

    def visit(**fields: Any) -> InteractionRecorded:
        return InteractionRecorded(type=kind, channel="web", occurred_at=now, **fields)

    await publish(
        broker,
        "crm.customers.v1",
        *[
            event("customer.created", CustomerCreated(**snapshot(c, email=f"{c.hex[:8]}@example.com")), c)
            for c in (ada, dup, erin)
        ],
        event(
            "customer.updated",
            CustomerUpdated(**snapshot(ada, 2, company="Replayed Ltd", email=f"{ada.hex[:8]}@example.com")),
            ada,
        ),
        event(
            "deal.stage_changed",
            DealStageChanged(
                deal_id=uuid.uuid4(),
                customer_id=ada,
                pipeline_id=uuid.uuid4(),
                to_stage="Proposal",
                status="open",
                changed_at=now + dt.timedelta(minutes=1),
                customer_open_deal_value=Decimal("1500"),
            ),
            ada,
        ),
        event("lead.converted", LeadConverted(lead_id=uuid.uuid4(), customer_id=ada), ada),
        event(
            "customer.merged",
            CustomerMerged(
                survivor_id=ada,
                duplicate_id=dup,
                survivor=CustomerSnapshot(**snapshot(ada, 3, company="Replayed Ltd", email=f"{ada.hex[:8]}@example.com")),
            ),
            ada,
        ),
        event("customer.erased", CustomerErased(customer_id=erin, erased_at=now), erin),
    )
    await publish(
        broker,
        "cx.interactions.v1",
        event("interaction.recorded", visit(customer_id=ada, summary="Pricing page"), ada),
        event("interaction.recorded", visit(customer_id=dup, summary="Docs"), dup, source="urn:web:shop"),
        event("interaction.recorded", visit(customer_email=f"{ada.hex[:8]}@EXAMPLE.com"), None, source="urn:pos:1"),
        event("interaction.recorded", visit(customer_id=erin, summary="Erin's visit"), erin),
    )
    survey = await make.survey("nps")
    await make.customer(id=ada)  # answers need the customer known before the replay runs
    await make.answer(survey["id"], {"nps": 1}, customer_id=str(ada))
    async with session_factory() as session:
        followup = (await session.scalars(select(Followup))).one()
    done = TaskCompleted(task_id=uuid.uuid4(), customer_id=ada, origin="followup", origin_ref=str(followup.id), completed_at=now)
    await publish(broker, "crm.customers.v1", event("task.completed", done, ada))

    counts = await replay(settings, session_factory, ProcessedEvent, projections(settings))
    assert counts[f"{settings.consumer_group}.crm-customers"] >= 9
    assert counts[f"{settings.consumer_group}.interactions"] >= 4
    before = {c: stable((await client.get(f"/v1/customers/{c}/experience")).json()) for c in (ada, erin)}
    assert before[ada]["customer"]["company"] == "Replayed Ltd" and before[ada]["customer"]["open_deal_value"] == "1500.00"
    assert before[ada]["customer"]["converted_from"] is not None
    assert len(before[ada]["touchpoint_history"]) == 3  # its own, the duplicate's and the one by its email
    assert before[ada]["followups"][0]["status"] == "closed"
    assert [h["summary"] for h in before[erin]["touchpoint_history"]] == [None]
    assert (await client.get(f"/v1/customers/{dup}/experience")).status_code == 308

    async with session_factory() as session, session.begin():
        await session.execute(
            update(CustomerProfile)
            .where(CustomerProfile.id == ada)
            .values(company="Damaged", open_deal_value=0, converted_lead_id=None, converted_at=None)
        )
        await session.execute(delete(TouchpointInteraction))
        await session.execute(update(Followup).values(status="open", closed_at=None))

    env = {
        **os.environ,
        "CEM_DATABASE_URL": settings.database_url,
        "CEM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        **dev_broker_env("CEM"),
        "CEM_CONSUMER_GROUP": settings.consumer_group,
        "CEM_LOG_JSON": "false",
    }
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cem.cli", "replay", "--yes"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "messages replayed" in result.stderr

    after = {c: stable((await client.get(f"/v1/customers/{c}/experience")).json()) for c in (ada, erin)}
    for c in (ada, erin):
        for part in before[c]:
            assert after[c][part] == before[c][part], (c, part, result.stderr[-2000:])
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Invitation)) == 0
        assert await session.scalar(select(func.count()).select_from(Suppression)) == 0
