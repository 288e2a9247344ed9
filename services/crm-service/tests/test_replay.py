"""`crm replay`: the experience projection rebuilt from `cem.feedback.v1`, from scratch, gives the
same views as before, and never makes a follow-up task again."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update

from crm.config import CRMSettings
from crm.consumers.cem_feedback import projection_handlers
from crm.db import ProcessedEvent
from crm.experience.models import ExperienceEvent
from crm.projections import projections
from crm.tasks.models import Task
from cxkit.dev_broker import dev_broker_env
from cxkit.events import CloudEvent, decode_event, encode_event
from cxkit.events.registry import CEM_FEEDBACK
from cxkit.kafka.client import ensure_topics
from cxkit.kafka.consumer import Delivery
from cxkit.replay import replay
from cxkit.testing import wait_for

T0 = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


async def views(client: httpx.AsyncClient, *customer_ids: Any) -> list[Any]:
    """Each customer's view and full timeline, as a client sees them."""
    out = []
    for cid in customer_ids:
        view = await client.get(f"/v1/customers/{cid}/view")
        entries = await client.get(f"/v1/customers/{cid}/timeline", params={"limit": 200})
        assert view.status_code == entries.status_code == 200
        out.append((view.json(), entries.json()))
    return out


async def damage(session_factory: Any) -> None:
    """Lose half the projection and corrupt the rest."""
    async with session_factory() as session, session.begin():
        ids = (await session.scalars(select(ExperienceEvent.id).order_by(ExperienceEvent.id))).all()
        await session.execute(delete(ExperienceEvent).where(ExperienceEvent.id.in_(ids[::2])))
        await session.execute(update(ExperienceEvent).values(score=0, text="corrupted"))


async def count(session_factory: Any, model: Any, *where: Any) -> int:
    async with session_factory() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_projection_handlers_store_every_kind_but_never_make_a_task(
    client: httpx.AsyncClient, make: Any, cem: Any, session_factory: Any
) -> None:
    cid = uuid.UUID((await make.customer(owner="kim"))["id"])
    events = [cem.followup(cid, 2), cem.response(cid, 2), cem.feedback(cid), cem.invited(cid), cem.throttled(cid)]
    async with session_factory() as session, session.begin():
        for event in events:
            decoded, payload = decode_event(encode_event(event))
            await projection_handlers()[decoded.type](session, [Delivery(decoded, payload, None)])  # type: ignore[arg-type]
    assert await count(session_factory, ExperienceEvent, ExperienceEvent.customer_id == cid) == 5
    assert await count(session_factory, Task) == 0


async def test_replay_from_the_topic_gives_the_same_views_and_makes_no_second_task(
    client: httpx.AsyncClient,
    make: Any,
    cem: Any,
    kafka: Any,
    feedback_consumer: Any,
    session_factory: Any,
) -> None:
    ada = uuid.UUID((await make.customer(owner="kim"))["id"])
    bob = uuid.UUID((await make.customer())["id"])
    bob_duplicate = uuid.UUID((await make.customer())["id"])
    last = cem.feedback(bob, "the last one", at=at(9))
    published: list[CloudEvent] = [
        cem.invited(ada, at=at(0)),
        cem.response(ada, 3, at=at(1), comment="Slow"),
        cem.followup(ada, 3, at=at(1)),
        cem.response(ada, 4, "csat", at=at(2)),
        cem.response(ada, 6, "ces", at=at(3)),
        cem.throttled(ada, "fatigue", at=at(4)),
        cem.response(bob_duplicate, 10, at=at(5)),
        cem.response(uuid.uuid4(), 1),  # unknown customer: dead-lettered live, skipped by the replay
        last,
    ]
    await kafka.produce(feedback_consumer.topic, [encode_event(e) for e in published])

    async def applied() -> bool:
        exp = (await client.get(f"/v1/customers/{bob}/view")).json()["experience"]
        return bool(exp and exp["last_feedback"]["text"] == "the last one")

    await wait_for(applied, 15)
    merged = await client.post(f"/v1/customers/{bob}/merge", json={"duplicate_id": str(bob_duplicate)})
    assert merged.status_code == 200, merged.text
    before = await views(client, ada, bob)
    assert before[0][0]["experience"]["open_followups"] == 1 and before[1][0]["experience"]["responses"] == 1
    await feedback_consumer.stop()

    await damage(session_factory)
    assert await views(client, ada, bob) != before

    settings: CRMSettings = feedback_consumer.settings
    [projection] = projections(settings)
    assert projection.consumer_name == feedback_consumer.name and projection.topics == [CEM_FEEDBACK]
    read = await replay(
        settings, session_factory, ProcessedEvent, [dataclasses.replace(projection, topics=[feedback_consumer.topic])]
    )

    assert read == {feedback_consumer.name: len(published)}
    assert await views(client, ada, bob) == before
    assert await count(session_factory, Task, Task.origin == "followup") == 1
    # The live consumer's processed events are the replayed ones: restarted, it repeats nothing.
    applied_ids = {e.id for e in published[:-2]} | {last.id}
    assert await count(session_factory, ProcessedEvent, ProcessedEvent.consumer == feedback_consumer.name) == len(applied_ids)


async def test_the_crm_replay_command_rebuilds_the_projection_from_cem_feedback(
    client: httpx.AsyncClient, make: Any, cem: Any, kafka: Any, apply_cem: Any, session_factory: Any, crm_settings: CRMSettings
) -> None:
    cid = uuid.UUID((await make.customer(owner="kim"))["id"])
    events = [cem.response(cid, 2, at=at(0), comment="Rude"), cem.followup(cid, 2, at=at(0)), cem.feedback(cid, at=at(1))]
    await apply_cem(*events)  # as the live consumer did
    before = await views(client, cid)
    await ensure_topics(crm_settings, [CEM_FEEDBACK])
    await kafka.produce(CEM_FEEDBACK, [encode_event(e) for e in events])
    await damage(session_factory)

    group = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CRM_DATABASE_URL": crm_settings.database_url,
        "CRM_KAFKA_BOOTSTRAP_SERVERS": crm_settings.kafka_bootstrap_servers,
        **dev_broker_env("CRM"),
        "CRM_CONSUMER_GROUP": group,
        "CRM_LOG_JSON": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crm.cli",
        "replay",
        "--yes",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert f"{group}.cem-feedback:" in err.decode() and "messages replayed" in err.decode()

    assert await views(client, cid) == before
    assert await count(session_factory, Task, Task.origin == "followup") == 1
