"""Replay (cxkit.replay) on its own: a damaged projection is reset and rebuilt from the topic,
from offset 0, each customer's events applied once and in order (a redelivered event once, a
bad message skipped without a DLQ), under the replay's own processed-events name, so the live
consumer's progress stays as it was; and a second replay rebuilds the same again."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cxkit.events.registry import dlq_topic
from cxkit.replay import Projection, replay, replay_name
from cxkit.settings import ServiceSettings

from .conftest import AppliedEvent, ProcessedEvent, applied, applying, customer_event, publish, read_topic

Sessions = async_sessionmaker[AsyncSession]
LIVE = "names"  # the live consumer the projection belongs to


async def reset_names(session: AsyncSession) -> None:
    await session.execute(delete(AppliedEvent).where(AppliedEvent.applier == LIVE))


def names_projection(topic: str) -> Projection:
    return Projection(consumer_name=LIVE, topics=[topic], handlers={"customer.updated": applying(LIVE)}, reset=reset_names)


async def processed(sessions: Sessions) -> dict[str, set[str]]:
    async with sessions() as session:
        rows = (await session.execute(select(ProcessedEvent.consumer, ProcessedEvent.event_id))).all()
    out: dict[str, set[str]] = {}
    for consumer, event_id in rows:
        out.setdefault(consumer, set()).add(event_id)
    return out


async def test_replay_rebuilds_a_damaged_projection_in_order_and_leaves_the_live_progress_alone(
    kit_settings: ServiceSettings, sessions: Sessions, topic: str
) -> None:
    ada, bob = uuid.uuid4(), uuid.uuid4()
    story = [(ada, 1, "A1"), (bob, 1, "B1"), (ada, 2, "A2"), (bob, 2, "B2"), (ada, 3, "A3")]
    events = [customer_event(c, v, n) for c, v, n in story]
    messages = [(str(c).encode(), e) for (c, _, _), e in zip(story, events, strict=True)]
    messages.insert(3, (str(ada).encode(), b"not an event"))
    messages.append((str(bob).encode(), events[3]))  # B2 delivered again
    await publish(kit_settings.kafka_bootstrap_servers, topic, messages)

    # The projection as damage left it, and the live consumer's own progress.
    async with sessions() as session, session.begin():
        session.add_all(
            [
                AppliedEvent(applier=LIVE, event_id="lost", customer_id=ada, name="corrupted", version=9),
                AppliedEvent(applier=LIVE, event_id="stale", customer_id=uuid.uuid4(), name="not on the topic", version=1),
                AppliedEvent(applier="someone-else", event_id="x", customer_id=bob, name="not mine", version=1),
                ProcessedEvent(consumer=LIVE, event_id="live-1"),
            ]
        )

    progress: list[tuple[int, int]] = []

    def report(_name: str, done: int, total: int) -> None:
        progress.append((done, total))

    for _ in range(2):  # a second replay rebuilds the same, it does not skip what the first applied
        progress.clear()
        read = await replay(kit_settings, sessions, ProcessedEvent, [names_projection(topic)], report)
        assert read == {LIVE: len(messages)}
        rows = await applied(sessions, LIVE)
        for customer in (ada, bob):
            assert [(r.version, r.name) for r in rows if r.customer_id == customer] == [
                (v, n) for c, v, n in story if c == customer
            ]
        assert len(rows) == len(story)  # the damage is gone, the redelivery applied once
        assert progress[-1][0] == len(messages)

    assert [r.name for r in await applied(sessions, "someone-else")] == ["not mine"]  # another projection's rows
    seen = await processed(sessions)
    assert seen[LIVE] == {"live-1"}
    assert len(seen[replay_name(names_projection(topic))]) == len(story)
    assert await read_topic(kit_settings.kafka_bootstrap_servers, dlq_topic(topic), timeout=1) == []  # nothing dead-lettered


async def test_replay_of_a_topic_nobody_wrote_still_resets_the_projection(
    kit_settings: ServiceSettings, sessions: Sessions
) -> None:
    async with sessions() as session, session.begin():
        session.add(AppliedEvent(applier=LIVE, event_id="old", customer_id=uuid.uuid4(), name="old", version=1))
    missing = f"cxkit-test.never-{uuid.uuid4().hex[:8]}"
    assert await replay(kit_settings, sessions, ProcessedEvent, [names_projection(missing)]) == {LIVE: 0}
    assert await applied(sessions, LIVE) == []
