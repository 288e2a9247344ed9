"""Scale-out (issue 9, item 7): topics with 3 partitions, two processes of each service in one
consumer group, so two outbox relays on one outbox as well. Under a steady load of customer
PATCHes and interaction events, one CEM process is killed with SIGKILL and, while it is away, one
CRM process too; both are started again (rebalances on the way out and on the way back in):
nothing is lost or doubled, and no customer's older `version` is applied after a newer one.

What the CEM's ordering can be seen by: its projection (`customer_profiles.crm_version`), read
every 50 ms, must never go back; and its processed-events log (which event each poll applied,
stamped with the poll's time) joined to the CRM outbox (each event's version) shows the order in
which the customer.updated events of one customer were applied, poll by poll."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from crm.config import CRMSettings
from crm.db import SOURCE, OutboxMessage
from cxkit import testing
from cxkit.db import make_engine, make_session_factory
from cxkit.dev_broker import DEV_BROKER_SETTINGS, DevBroker
from cxkit.events.payloads import CustomerUpdated
from cxkit.events.registry import CEM_FEEDBACK, CRM_CUSTOMERS, CX_INTERACTIONS
from cxkit.kafka.outbox import OutboxRelay, add_event

pytestmark = pytest.mark.e2e


CUSTOMERS = 24
PATCH_WORKERS = 3


def stale_applications(applied: list[tuple[Any, int]]) -> int:
    """Events applied after an event of a newer version had been applied (in an earlier poll):
    `applied` is one customer's (poll time, version) list."""
    stale = 0
    newest_before: int | None = None
    by_poll: dict[Any, list[int]] = defaultdict(list)
    for at, version in applied:
        by_poll[at].append(version)
    for at in sorted(by_poll):
        if newest_before is not None:
            stale += sum(v < newest_before for v in by_poll[at])
        newest_before = max([*by_poll[at], *([newest_before] if newest_before is not None else [])])
    return stale


async def partitions_of(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


@pytest.mark.timeout(240)
async def test_two_processes_of_each_service_lose_double_and_reorder_nothing_when_one_is_killed_and_rejoins(
    stack_factory: Any, private_broker: DevBroker, record_property: Any
) -> None:
    began = time.monotonic()
    run = f"so-{uuid.uuid4().hex[:8]}"
    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:.1f}s {what}")

    stack = stack_factory(private_broker.bootstrap)
    crm2, cem2 = stack.replica("CRM", start=False), stack.replica("CEM", start=False)

    def start(proc: testing.ServiceProcess) -> None:
        proc.start()
        proc.wait_ready()

    await asyncio.gather(
        asyncio.to_thread(stack.start_crm),
        asyncio.to_thread(stack.start_cem),
        asyncio.to_thread(start, crm2),
        asyncio.to_thread(start, cem2),
    )
    assert stack.crm is not None and stack.cem is not None
    mark("4 processes ready")
    # The services created the topics with the default of kafka_topic_partitions.
    partitions = await partitions_of(private_broker.bootstrap, [CRM_CUSTOMERS, CX_INTERACTIONS, CEM_FEEDBACK])
    assert partitions == {CRM_CUSTOMERS: 3, CX_INTERACTIONS: 3, CEM_FEEDBACK: 3}

    headers = testing.bearer(stack.key)
    crm = [httpx.AsyncClient(base_url=p.url, headers=headers, timeout=10) for p in (stack.crm, crm2)]
    tally = testing.Tally()
    ids: list[str] = []
    for n in range(CUSTOMERS):
        body = {"email": f"{run}-{n}@example.com", "name": f"Scale {n}"}
        ids.append(
            (await testing.write_until_acknowledged(crm[n % 2 :] + crm[: n % 2], "POST", "/v1/customers", body, tally))["id"]
        )

    stop = asyncio.Event()
    acked_versions: dict[str, int] = dict.fromkeys(ids, 1)
    http_interactions: list[str] = []
    outside_interactions: list[str] = []
    publisher = testing.OutsidePublisher(private_broker.bootstrap, CX_INTERACTIONS)

    async def patcher(worker: int) -> None:
        mine, n = ids[worker::PATCH_WORKERS], 0
        while not stop.is_set():
            for customer_id in mine:
                n += 1
                order = crm[n % 2 :] + crm[: n % 2]
                body = {"company": f"{run}-{worker}-{n}"}
                answer = await testing.write_until_acknowledged(order, "PATCH", f"/v1/customers/{customer_id}", body, tally)
                acked_versions[customer_id] = max(acked_versions[customer_id], answer["version"])
            await asyncio.sleep(0.05)

    async def http_interaction_writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            summary = f"{run}:http:{n}"
            body = {"customer_id": ids[n % CUSTOMERS], "type": "call", "summary": summary}
            await testing.write_until_acknowledged(crm[n % 2 :] + crm[: n % 2], "POST", "/v1/interactions", body, tally)
            http_interactions.append(summary)
            await asyncio.sleep(0.05)

    async def outside_system() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            summary = f"{run}:kafka:{n}"
            await publisher.publish(*testing.outside_interaction(ids[n % CUSTOMERS], summary))
            outside_interactions.append(summary)
            await asyncio.sleep(0.05)

    # The CEM's projection as a reader sees it, every 50 ms: a version must never go back.
    observed: dict[str, int] = {}
    regressions: list[tuple[str, int, int]] = []
    samples = 0
    observing = True

    async def observer() -> None:
        nonlocal samples
        conn = await asyncpg.connect(stack.cem_db.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            while observing:
                for row in await conn.fetch("SELECT id::text AS id, crm_version FROM customer_profiles"):
                    before = observed.get(row["id"], 0)
                    if row["crm_version"] < before:
                        regressions.append((row["id"], before, row["crm_version"]))
                    observed[row["id"]] = max(before, row["crm_version"])
                samples += 1
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def kill_and_restart(name: str, proc: testing.ServiceProcess, restart: Any) -> None:
        mark(f"kill -9 {name}")
        proc.stop(kill=True)
        await asyncio.to_thread(restart)
        mark(f"{name} back, ready")

    async def chaos() -> None:
        await asyncio.sleep(3)
        # One CEM process killed (its partitions move to the other, then part of them back once
        # it rejoins), and while it is away one CRM process too (its relay's claimed rows and
        # its consumers' partitions go to the other; clients retry on the other process).
        assert stack.crm is not None
        cem_back = asyncio.create_task(kill_and_restart("cem-2", cem2, lambda: start(cem2)))
        await asyncio.sleep(1.5)
        await kill_and_restart("crm-1", stack.crm, stack.start_crm)
        await cem_back
        await asyncio.sleep(2)
        stop.set()
        mark("load stopped")

    watcher = asyncio.create_task(observer())
    load = [
        *(asyncio.create_task(patcher(w)) for w in range(PATCH_WORKERS)),
        asyncio.create_task(http_interaction_writer()),
        asyncio.create_task(outside_system()),
    ]
    try:
        await chaos()
        await asyncio.gather(*load)
        await publisher.close()

        # Drain: every acknowledged change and event reaches the other side.
        expected_summaries = set(http_interactions) | set(outside_interactions)

        async def cem_caught_up() -> bool:
            rows = await testing.db_rows(stack.cem_db, "SELECT id::text AS id, crm_version FROM customer_profiles")
            versions = {r["id"]: r["crm_version"] for r in rows}
            done = await testing.db_rows(
                stack.cem_db, "SELECT count(*) AS n FROM touchpoint_interactions WHERE summary LIKE $1", f"{run}:%"
            )
            return all(versions.get(i) == v for i, v in acked_versions.items()) and done[0]["n"] >= len(expected_summaries)

        async def crm_caught_up() -> bool:
            done = await testing.db_rows(stack.crm_db, "SELECT count(*) AS n FROM interactions WHERE summary LIKE $1", f"{run}:%")
            return bool(done[0]["n"] >= len(expected_summaries))

        try:
            if await testing.settles(cem_caught_up, timeout=60) and await testing.settles(crm_caught_up, timeout=30):
                mark("both sides caught up")
        finally:
            observing = False
            await watcher
    finally:
        stop.set()
        observing = False
        for task in load:
            task.cancel()
        for client in crm:
            await client.aclose()
        await publisher.close()
        await asyncio.to_thread(stack.stop)

    # --- What was applied, counted from the databases -----------------------------------------
    crm_versions = {
        r["id"]: r["version"] for r in await testing.db_rows(stack.crm_db, "SELECT id::text AS id, version FROM customers")
    }
    crm_rows = await testing.db_rows(
        stack.crm_db, "SELECT summary, count(*) AS n FROM interactions WHERE summary LIKE $1 GROUP BY summary", f"{run}:%"
    )
    cem_rows = await testing.db_rows(
        stack.cem_db,
        "SELECT summary, count(*) AS n FROM touchpoint_interactions WHERE summary LIKE $1 GROUP BY summary",
        f"{run}:%",
    )
    cem_versions = {
        r["id"]: r["crm_version"]
        for r in await testing.db_rows(stack.cem_db, "SELECT id::text AS id, crm_version FROM customer_profiles")
    }
    crm_count = {r["summary"]: r["n"] for r in crm_rows}
    cem_count = {r["summary"]: r["n"] for r in cem_rows}
    # customer.created/updated as the CRM wrote them (outbox) and as the CEM applied them.
    outbox = await testing.db_rows(
        stack.crm_db, "SELECT event_id::text AS event_id, event_type, value FROM outbox WHERE topic = $1", CRM_CUSTOMERS
    )
    snapshot_version: dict[str, tuple[str, int]] = {}
    for row in outbox:
        data = orjson.loads(row["value"])["data"]
        snapshot_version[row["event_id"]] = (data["id"], data["version"])
    applied = await testing.db_rows(
        stack.cem_db,
        "SELECT event_id, processed_at FROM processed_events WHERE consumer = $1",
        f"{stack.group('CEM')}.crm-customers",
    )
    applied_ids = {r["event_id"] for r in applied}
    per_customer: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for r in applied:
        customer_id, version = snapshot_version[r["event_id"]]
        per_customer[customer_id].append((r["processed_at"], version))
    outbox_versions: dict[str, list[int]] = defaultdict(list)
    for customer_id, version in snapshot_version.values():
        outbox_versions[customer_id].append(version)

    figures = {
        "processes": "crm x2, cem x2 (one consumer group each; two relays on one outbox)",
        "partitions": partitions,
        "customers": CUSTOMERS,
        "patches_acknowledged": sum(v - 1 for v in acked_versions.values()),
        "interactions_http": len(http_interactions),
        "interactions_kafka": len(outside_interactions),
        "http_attempts": dict(tally.counts),
        "versions_lost_in_outbox": sum(len(set(range(1, crm_versions[c] + 1)) - set(outbox_versions[c])) for c in ids),
        "versions_doubled_in_outbox": sum(len(v) - len(set(v)) for v in outbox_versions.values()),
        "snapshot_events_lost_at_cem": len(set(snapshot_version) - applied_ids),
        "projection_behind_crm": sum(cem_versions.get(c) != crm_versions[c] for c in ids),
        "projection_samples": samples,
        "projection_regressions": len(regressions),
        "older_version_applied_after_newer": sum(stale_applications(v) for v in per_customer.values()),
        "interactions_lost_crm": len(expected_summaries - set(crm_count)),
        "interactions_doubled_crm": sum(n - 1 for n in crm_count.values()),
        "interactions_lost_cem": len(expected_summaries - set(cem_count)),
        "interactions_doubled_cem": sum(n - 1 for n in cem_count.values()),
        "outside_publish_retries": publisher.failed_attempts,
        "timeline": timeline,
        "seconds": round(time.monotonic() - began, 1),
    }
    print("FAULT-FIGURES scale_out " + json.dumps(figures))
    record_property("figures", json.dumps(figures))

    assert tally[500] == 0, figures
    assert acked_versions == {c: crm_versions[c] for c in ids}, figures  # the CRM holds what it acknowledged
    assert figures["versions_lost_in_outbox"] == 0 and figures["versions_doubled_in_outbox"] == 0, figures
    assert figures["snapshot_events_lost_at_cem"] == 0 and figures["projection_behind_crm"] == 0, figures
    assert figures["projection_regressions"] == 0, (regressions[:10], figures)
    assert figures["older_version_applied_after_newer"] == 0, figures
    assert figures["interactions_lost_crm"] == 0 and figures["interactions_doubled_crm"] == 0, figures
    assert figures["interactions_lost_cem"] == 0 and figures["interactions_doubled_cem"] == 0, figures


async def test_two_relays_on_one_outbox_send_one_customers_events_in_outbox_order(
    databases: tuple[str, str], private_broker: DevBroker, record_property: Any
) -> None:
    """The race behind the ordering above, made certain: one relay has claimed a customer's
    version 2 and is slow to send it (its producer held for a second) when version 3 is written
    and the other relay's round starts. The partition must still get 2 before 3."""
    crm_db = databases[0]
    settings = CRMSettings(database_url=crm_db, kafka_bootstrap_servers=private_broker.bootstrap, **DEV_BROKER_SETTINGS)
    engine = make_engine(crm_db)
    sessions = make_session_factory(engine)
    first, second = (OutboxRelay(settings, sessions, OutboxMessage, [CRM_CUSTOMERS]) for _ in range(2))
    customer_id = uuid.uuid4()

    async def write(version: int) -> None:
        snapshot = CustomerUpdated(id=customer_id, email="order@example.com", version=version, changed=["company"])
        async with sessions() as session, session.begin():
            add_event(session, OutboxMessage, "customer.updated", source=SOURCE, subject=customer_id, data=snapshot)

    try:
        await write(1)
        assert await first.relay_once() == 1
        producer = await first._ensure_producer()
        send = producer.send

        async def slow_send(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(1.0)
            return await send(*args, **kwargs)

        producer.send = slow_send  # type: ignore[method-assign]
        await write(2)
        first_round = asyncio.create_task(first.relay_once())
        await asyncio.sleep(0.3)  # the first relay holds version 2, unsent
        await write(3)
        sent = [await second.relay_once(), await first_round]
        producer.send = send  # type: ignore[method-assign]
    finally:
        await first.stop()
        await second.stop()
        await engine.dispose()

    consumer = AIOKafkaConsumer(CRM_CUSTOMERS, bootstrap_servers=private_broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    versions: list[int] = []
    try:
        deadline = time.monotonic() + 10
        while len(versions) < 3 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                versions += [orjson.loads(r.value)["data"]["version"] for r in records if r.key == str(customer_id).encode()]
    finally:
        await consumer.stop()
    figures = {"sent_by_second_then_first": sent, "partition_order": versions}
    print("FAULT-FIGURES relay_order " + json.dumps(figures))
    record_property("figures", json.dumps(figures))
    assert versions == [1, 2, 3], figures
