"""The fault suite (issue 9, item 6; SPEC §6, last bullet): both services as real processes on
real PostgreSQL and a real broker, under a small load of HTTP writes and Kafka interaction
events, while a fault strikes: a process killed with SIGKILL, the broker away (unreachable, then
restarted empty), the database cut off, events delivered several times. Each test counts exactly what it wrote and published and
what each side holds after (lost = 0, doubled = 0), and prints its figures on one
`FAULT-FIGURES <test> {...}` line (also kept as the junit property `figures`).

Every write is sent as a careful client sends it (`cxkit.testing.write_until_acknowledged`): one
`Idempotency-Key` for all its attempts, tried again after no answer or a 503; so "exactly once"
holds for every write that was acknowledged, whatever happened to the attempts before."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url

from cxkit import testing
from cxkit.dev_broker import DevBroker
from cxkit.events.registry import CRM_CUSTOMERS, CX_INTERACTIONS
from cxkit.kafka.client import ensure_topics
from cxkit.settings import ServiceSettings

pytestmark = pytest.mark.e2e


class Timeline(list[str]):
    """What happened when, in seconds since the test began (kept in the figures)."""

    def __init__(self) -> None:
        super().__init__()
        self.began = time.monotonic()

    def __call__(self, what: str) -> None:
        self.append(f"{self.seconds():.1f}s {what}")

    def seconds(self) -> float:
        return round(time.monotonic() - self.began, 1)


def report(test: str, figures: dict[str, Any], record_property: Any) -> None:
    print(f"FAULT-FIGURES {test} " + json.dumps(figures, default=str))
    record_property("figures", json.dumps(figures, default=str))


async def start_both(stack: Any) -> None:
    await asyncio.gather(asyncio.to_thread(stack.start_crm), asyncio.to_thread(stack.start_cem))


async def by_summary(database_url: str, table: str, run: str) -> dict[str, int]:
    """Rows of `table` (interactions on the CRM, touchpoint_interactions on the CEM) per summary."""
    rows = await testing.db_rows(
        database_url, f"SELECT summary, count(*) AS n FROM {table} WHERE summary LIKE $1 GROUP BY summary", f"{run}:%"
    )
    return {r["summary"]: r["n"] for r in rows}


async def outbox_by_summary(crm_db: str, run: str) -> dict[str, int]:
    """The CRM's interaction.recorded events per interaction summary (the outbox keeps sent rows)."""
    rows = await testing.db_rows(crm_db, "SELECT value FROM outbox WHERE event_type = 'interaction.recorded'")
    found: Counter[str] = Counter()
    for row in rows:
        summary = orjson.loads(row["value"])["data"].get("summary") or ""
        if summary.startswith(f"{run}:"):
            found[summary] += 1
    return dict(found)


async def new_customers(crm: list[httpx.AsyncClient], run: str, count: int, tally: testing.Tally) -> list[str]:
    ids = []
    for n in range(count):
        body = {"email": f"{run}-{n}@example.com", "name": f"Fault {n}"}
        ids.append((await testing.write_until_acknowledged(crm, "POST", "/v1/customers", body, tally))["id"])
    return ids


async def cem_versions(cem_db: str) -> dict[str, int]:
    """The CRM version of each customer in the CEM's projection."""
    rows = await testing.db_rows(cem_db, "SELECT id::text AS id, crm_version FROM customer_profiles")
    return {r["id"]: r["crm_version"] for r in rows}


async def cem_knows(cem_db: str, customer_versions: dict[str, int]) -> bool:
    """The CEM's projection holds every one of these customers at (at least) that version."""
    versions = await cem_versions(cem_db)
    return all(versions.get(c, 0) >= v for c, v in customer_versions.items())


async def where_stuck(stack: Any, run: str, customer_versions: dict[str, int], summaries: list[str]) -> dict[str, Any]:
    """What a fault test reports when the CEM has not caught up: what it still misses of `run`'s
    writes, what the CRM has not sent, and what each side's /ready and metrics say (relay and
    consumer errors, consumer lag), so that a failure names the side that stalled."""
    versions = await cem_versions(stack.cem_db)
    cem_summaries = await by_summary(stack.cem_db, "touchpoint_interactions", run)
    unsent = await testing.db_rows(
        stack.crm_db, "SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE sent_at IS NULL"
    )
    found: dict[str, Any] = {
        "cem_customers_behind": sum(versions.get(c, 0) < v for c, v in customer_versions.items()),
        "cem_interactions_missing": len(set(summaries) - cem_summaries.keys()),
        "crm_outbox_unsent": unsent[0]["n"],
        "crm_outbox_oldest_unsent": str(unsent[0]["oldest"]),
    }
    for name, base in (("crm", stack.crm.url), ("cem", stack.cem.url)):
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            try:
                found[f"{name}_ready"] = (await client.get("/ready")).json().get("checks")
                metrics = (await client.get("/metrics")).text
            except httpx.HTTPError as exc:
                found[f"{name}_ready"] = repr(exc)
                continue
        found[f"{name}_relay_errors"] = testing.metric_total(metrics, "outbox_relay_errors_total")
        found[f"{name}_consumer_errors"] = testing.metric_total(metrics, "consumer_errors_total")
        found[f"{name}_consumer_lag"] = testing.metric_total(metrics, "consumer_lag")
    return found


def broker_client_lines(log: Path) -> dict[str, int]:
    """The broker client's (aiokafka's) lines in a service's log: how many were written, and
    how many more they say were held back as repeats (`repeated`)."""
    written = summarised = 0
    for line in log.read_text(errors="replace").splitlines():
        if '"logger": "aiokafka' in line or '"logger": "kafka' in line:
            written += 1
            summarised += int(orjson.loads(line).get("repeated", 0)) if line.startswith("{") else 0
    return {"written": written, "summarised": summarised}


class InteractionLoad:
    """Interactions into the CRM over HTTP (`http_workers` writers) and from an outside system
    onto `cx.interactions.v1`, each with a unique summary, every `pace` seconds per worker, until
    `stop` is set. Keeps the summaries of the acknowledged writes and the published events."""

    def __init__(
        self,
        run: str,
        customers: list[str],
        crm: list[httpx.AsyncClient],
        publisher: testing.OutsidePublisher | None,
        tally: testing.Tally,
        *,
        http_workers: int = 2,
        pace: float = 0.03,
    ) -> None:
        self.run, self.customers, self.crm, self.publisher, self.tally = run, customers, crm, publisher, tally
        self.http_workers, self.pace = http_workers, pace
        self.http: list[str] = []
        self.kafka: list[str] = []

    @property
    def expected(self) -> set[str]:
        return set(self.http) | set(self.kafka)

    async def _http(self, worker: int, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            summary = f"{self.run}:http:{worker}:{n}"
            body = {"customer_id": self.customers[n % len(self.customers)], "type": "call", "summary": summary}
            await testing.write_until_acknowledged(self.crm, "POST", "/v1/interactions", body, self.tally)
            self.http.append(summary)
            await asyncio.sleep(self.pace)

    async def _kafka(self, stop: asyncio.Event) -> None:
        assert self.publisher is not None
        n = 0
        while not stop.is_set():
            n += 1
            summary = f"{self.run}:kafka:{n}"
            await self.publisher.publish(*testing.outside_interaction(self.customers[n % len(self.customers)], summary))
            self.kafka.append(summary)
            await asyncio.sleep(self.pace)

    async def burst(self, count: int) -> None:
        """`count` outside events at once (published concurrently, so the consumers get them in
        large polls)."""
        assert self.publisher is not None
        summaries = [f"{self.run}:burst:{len(self.kafka)}:{n}" for n in range(count)]
        events = [testing.outside_interaction(self.customers[n % len(self.customers)], s) for n, s in enumerate(summaries)]
        await asyncio.gather(*(self.publisher.publish(key, value) for key, value in events))
        self.kafka.extend(summaries)

    async def __call__(self, stop: asyncio.Event) -> None:
        workers = [self._http(w, stop) for w in range(self.http_workers)]
        if self.publisher is not None:
            workers.append(self._kafka(stop))
        await asyncio.gather(*workers)


async def both_sides_hold(
    crm_db: str, cem_db: str, run: str, expected: set[str], cem_only: AbstractSet[str] = frozenset()
) -> bool:
    """Each of these interactions is on both sides (those in `cem_only` on the CEM's)."""
    crm_rows = await by_summary(crm_db, "interactions", run)
    cem_rows = await by_summary(cem_db, "touchpoint_interactions", run)
    return expected <= crm_rows.keys() and (expected | cem_only) <= cem_rows.keys()


async def exact_counts(crm_db: str, cem_db: str, run: str, load: InteractionLoad) -> dict[str, Any]:
    crm_rows = await by_summary(crm_db, "interactions", run)
    cem_rows = await by_summary(cem_db, "touchpoint_interactions", run)
    return {
        "crm_interactions": testing.marked(crm_rows, load.expected),
        "cem_interactions": testing.marked(cem_rows, load.expected),
        "crm_outbox_events": testing.marked(await outbox_by_summary(crm_db, run), set(load.http)),
    }


def assert_exact(counts: dict[str, Any], figures: dict[str, Any]) -> None:
    for where, found in counts.items():
        assert found == {"lost": 0, "doubled": 0, "unexpected": 0}, (where, figures)


class PhasedTally(testing.Tally):
    """Outcomes per phase of the test (`before`, `outage`, `after`) as well as in all."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "before"
        self.phases: dict[str, Counter[int | str]] = {}

    def record(self, outcome: int | str) -> None:
        super().record(outcome)
        self.phases.setdefault(self.phase, Counter())[outcome] += 1


async def kill_mid_transaction(proc: testing.ServiceProcess, database_url: str, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
    """SIGKILL the process the moment a write transaction is open in its database, if one comes
    within `timeout` (on the CEM, which takes no HTTP writes here, that is a consumer applying a
    poll). Returns whether one was open."""
    name = make_url(database_url).database
    conn = await asyncpg.connect(testing.admin_dsn())
    try:
        deadline = time.monotonic() + timeout
        caught = False
        while time.monotonic() < deadline and not caught:
            caught = bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_xid IS NOT NULL"
                    " AND pid <> pg_backend_pid()",
                    name,
                )
            )
        proc.stop(kill=True)
    finally:
        await conn.close()
    return caught


# --- 1. A process killed with SIGKILL mid-load ---------------------------------------------------


@pytest.mark.timeout(240)  # process restarts wait for the group's session timeout
async def test_services_killed_with_sigkill_mid_load_keep_every_write_and_event_exactly_once(
    stack_factory: Any, private_broker: DevBroker, record_property: Any
) -> None:
    """Interactions stream in over HTTP and from an outside system on Kafka while the CEM is
    killed with SIGKILL in the middle of applying a poll (a burst makes the polls large), the CRM
    while HTTP writes are in flight, and the CEM once more after both are back. Every
    acknowledged write and every published event is then on both sides exactly once, and the
    CRM's outbox holds one event per acknowledged write."""
    mark = Timeline()
    run = f"kill-{uuid.uuid4().hex[:8]}"
    stack = stack_factory(private_broker.bootstrap)
    await start_both(stack)
    mark("both services ready")
    assert stack.crm is not None
    tally = testing.Tally()
    crm = [httpx.AsyncClient(base_url=stack.crm.url, headers=testing.bearer(stack.key), timeout=10)]
    publisher = testing.OutsidePublisher(private_broker.bootstrap, CX_INTERACTIONS)
    customers = await new_customers(crm, run, 8, tally)
    load = InteractionLoad(run, customers, crm, publisher, tally, pace=0.05)
    stop = asyncio.Event()
    kills: list[dict[str, Any]] = []

    async def kill_and_restart(target: str) -> None:
        proc = stack.cem if target == "CEM" else stack.crm
        assert proc is not None
        if target == "CEM":  # a burst, so that the CEM is killed in the middle of a large poll
            burst = asyncio.create_task(load.burst(150))
            mid_transaction = await kill_mid_transaction(proc, stack.cem_db)
            await burst
        else:
            mid_transaction = await kill_mid_transaction(proc, stack.crm_db)
        killed_at = time.monotonic()
        written = len(load.http) + len(load.kafka)
        await asyncio.to_thread(stack.start_cem if target == "CEM" else stack.start_crm)
        kills.append(
            {
                "service": target,
                "at_s": round(killed_at - mark.began, 1),
                "transaction_open": mid_transaction,
                "writes_and_events_before": written,
                "ready_again_in_s": round(time.monotonic() - killed_at, 1),
            }
        )

    running = asyncio.create_task(load(stop))
    try:
        await asyncio.sleep(1.5)
        # The CEM killed while applying a poll, the CRM while writes are in flight (both while
        # the CEM is still down), then the CEM once more once both are back.
        cem_down = asyncio.create_task(kill_and_restart("CEM"))
        await asyncio.sleep(1)
        await kill_and_restart("CRM")
        await cem_down
        await asyncio.sleep(1)
        await kill_and_restart("CEM")
        await asyncio.sleep(1)
        stop.set()
        await running
        mark("load stopped")
        if await testing.settles(lambda: both_sides_hold(stack.crm_db, stack.cem_db, run, load.expected), timeout=45):
            mark("both sides hold every write and event")
            await asyncio.sleep(1)  # time for a late double to show up
    finally:
        stop.set()
        running.cancel()
        await publisher.close()
        await crm[0].aclose()
        await asyncio.to_thread(stack.stop)

    counts = await exact_counts(stack.crm_db, stack.cem_db, run, load)
    figures = {
        "http_writes_acknowledged": len(load.http),
        "kafka_events_published": len(load.kafka),
        "http_attempts": dict(tally.counts),
        "publish_retries": publisher.failed_attempts,
        "kills": kills,
        **counts,
        "timeline": mark,
        "seconds": mark.seconds(),
    }
    report("sigkill", figures, record_property)
    assert tally[500] == 0, figures
    assert len(kills) == 3 and any(k["transaction_open"] for k in kills if k["service"] == "CEM"), figures
    assert_exact(counts, figures)


# --- 2. The broker away for some seconds during writes, then back ------------------------------


def run_cli(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(240)
async def test_broker_outages_during_writes_lose_no_acknowledged_write_and_apply_each_event_once(
    stack_factory: Any, broker_behind_proxy: testing.BrokerBehindProxy, record_property: Any
) -> None:
    """Two outages under a steady stream of CRM writes (customers created and patched,
    interactions). First the broker is unreachable for 12 s but keeps its data, as an Apache
    Kafka broker that restarts: longer than the producer's request timeout (10 s), so the relay's
    sends fail and it must retry them itself, and longer than the consumers' session timeout, so
    they must rejoin. Every write is answered, its event waits in the outbox, and once the
    broker is back everything reaches the CEM by itself, exactly once.

    Then the dev broker process itself restarts, on the same address, and comes back empty (it
    keeps nothing in memory). A running consumer keeps its position in the old log, and the dev
    broker even acknowledges messages for the topics it forgot without keeping them, so what
    this part holds the product to is what the outbox guarantees: every write answered, its
    event kept until sent, the backlog drained once the broker is back (its topics created
    again), and after `outbox-requeue` (the remedy for a broker that lost messages, which
    `make run` applies at each start) the CEM holds each event's effect exactly once."""
    broker = broker_behind_proxy
    mark = Timeline()
    run = f"brk-{uuid.uuid4().hex[:8]}"
    stack = stack_factory(broker.bootstrap)
    await start_both(stack)
    mark("both services ready")
    assert stack.crm is not None and stack.cem is not None
    tally = PhasedTally()
    crm = [httpx.AsyncClient(base_url=stack.crm.url, headers=testing.bearer(stack.key), timeout=10)]
    customers = await new_customers(crm, run, 4, tally)
    await testing.wait_for(lambda: cem_knows(stack.cem_db, dict.fromkeys(customers, 1)), timeout=20)

    versions: dict[str, int] = dict.fromkeys(customers, 1)
    interactions: list[str] = []
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if n % 3 == 0:
                body = {"email": f"{run}-w{n}@example.com", "name": f"Written {n}"}
                created = await testing.write_until_acknowledged(crm, "POST", "/v1/customers", body, tally)
                versions[created["id"]] = created["version"]
            elif n % 3 == 1:
                customer_id = list(versions)[n % len(versions)]
                body = {"company": f"{run}-{n}"}
                patched = await testing.write_until_acknowledged(crm, "PATCH", f"/v1/customers/{customer_id}", body, tally)
                versions[customer_id] = max(versions[customer_id], patched["version"])
            else:
                summary = f"{run}:http:{n}"
                body = {"customer_id": customers[n % len(customers)], "type": "purchase", "summary": summary}
                await testing.write_until_acknowledged(crm, "POST", "/v1/interactions", body, tally)
                interactions.append(summary)
            await asyncio.sleep(0.03)

    async def outbox_last_id() -> int:
        return int((await testing.db_rows(stack.crm_db, "SELECT coalesce(max(id), 0) AS n FROM outbox"))[0]["n"])

    async def unsent() -> int:
        return int((await testing.db_rows(stack.crm_db, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"))[0]["n"])

    async def drained() -> bool:
        return await unsent() == 0

    async def outage(name: str, seconds: float, *, restart_empty: bool) -> dict[str, Any]:
        tally.phase = name
        await broker.cut()
        mark(f"broker {name}")
        last_id = await outbox_last_id()  # rows after it are written while the broker is away
        if restart_empty:
            await broker.restart_empty()
        await asyncio.sleep(seconds / 2)
        ready = (await crm[0].get("/ready")).status_code
        await asyncio.sleep(seconds / 2)
        rows = await testing.db_rows(
            stack.crm_db,
            "SELECT count(*) AS written, count(*) FILTER (WHERE sent_at IS NULL) AS waiting FROM outbox WHERE id > $1",
            last_id,
        )
        await broker.restore()
        if restart_empty:
            # As an operator restores a broker that lost its data: its topics first (the compose
            # kafka-init one-shot), then outbox-requeue (below). The dev broker acknowledges and
            # drops messages for topics it does not have, and nothing else creates them again.
            await ensure_topics(ServiceSettings(kafka_bootstrap_servers=broker.bootstrap), [CRM_CUSTOMERS, CX_INTERACTIONS])
        tally.phase = f"after {name}"
        mark("broker back")
        written, waiting = rows[0]["written"], rows[0]["waiting"]
        return {"seconds": seconds, "crm_ready": ready, "events_written": written, "waiting_in_outbox": waiting}

    async def cem_holds(customer_versions: dict[str, int], summaries: list[str]) -> bool:
        cem_rows = await by_summary(stack.cem_db, "touchpoint_interactions", run)
        return await cem_knows(stack.cem_db, customer_versions) and set(summaries) <= cem_rows.keys()

    figures: dict[str, Any] = {}
    writing = asyncio.create_task(writer())
    try:
        # 1. Unreachable, data kept: everything arrives by itself.
        await asyncio.sleep(1)
        figures["unreachable"] = await outage("unreachable", 12, restart_empty=False)
        await asyncio.sleep(1)
        acknowledged = (dict(versions), list(interactions))
        back = time.monotonic()
        caught_up = await testing.settles(lambda: cem_holds(*acknowledged), timeout=30)
        figures["unreachable"]["cem_caught_up_by_itself"] = caught_up
        figures["unreachable"]["cem_caught_up_s_after_back"] = round(time.monotonic() - back + 1, 1)
        if not caught_up:
            figures["unreachable"]["stuck"] = await where_stuck(stack, run, *acknowledged)
        mark("CEM caught up by itself" if caught_up else "CEM did not catch up")

        # 2. Restarted empty: the outbox keeps every event; outbox-requeue makes up for the loss.
        figures["restarted_empty"] = await outage("restarted empty", 3, restart_empty=True)
        await asyncio.sleep(1)
        stop.set()
        await writing
        figures["restarted_empty"]["backlog_drained"] = await testing.settles(drained, timeout=30)
        figures["restarted_empty"]["cem_complete_without_requeue"] = await testing.settles(
            lambda: cem_holds(versions, interactions), timeout=5
        )
        async with stack.cem_client() as cem:
            metrics_before = (await cem.get("/metrics")).text
        mark("backlog drained")
        requeue = run_cli(["crm.cli", "outbox-requeue"], stack.env("CRM", stack.crm_db))
        assert requeue.returncode == 0, requeue.stderr[-2000:]
        total_events = int((await testing.db_rows(stack.crm_db, "SELECT count(*) AS n FROM outbox"))[0]["n"])

        async def requeue_consumed() -> bool:
            async with stack.cem_client() as cem:
                text = (await cem.get("/metrics")).text
            seen = sum(
                testing.metric_total(text, name) - testing.metric_total(metrics_before, name)
                for name in ("events_handled_total", "events_duplicate_total")
            )
            return seen >= total_events and await drained() and await cem_holds(versions, interactions)

        if await testing.settles(requeue_consumed, timeout=45, interval=0.3):
            mark("requeued events all seen by the CEM")
        async with stack.cem_client() as cem:
            metrics_after = (await cem.get("/metrics")).text
    finally:
        stop.set()
        writing.cancel()
        await crm[0].aclose()
        await asyncio.to_thread(stack.stop)  # the proxies in this loop keep forwarding meanwhile

    cem_rows = await by_summary(stack.cem_db, "touchpoint_interactions", run)
    cem_at = await cem_versions(stack.cem_db)
    crm_versions = {
        r["id"]: r["version"] for r in await testing.db_rows(stack.crm_db, "SELECT id::text AS id, version FROM customers")
    }
    outbox_events = await testing.db_rows(
        stack.crm_db, "SELECT event_type, count(*) AS n FROM outbox GROUP BY event_type ORDER BY event_type"
    )
    processed = await testing.db_rows(
        stack.cem_db, "SELECT count(*) AS n FROM processed_events WHERE consumer LIKE $1", f"{stack.group('CEM')}.%"
    )
    figures.update(
        {
            "write_attempts": {p: dict(c) for p, c in tally.phases.items()},
            "customers": len(versions),
            "interactions": len(interactions),
            "outbox_events": {r["event_type"]: r["n"] for r in outbox_events},
            "requeued": total_events,
            "cem_after_requeue": {
                "applied": testing.metric_total(metrics_after, "events_handled_total")
                - testing.metric_total(metrics_before, "events_handled_total"),
                "skipped_as_duplicates": testing.metric_total(metrics_after, "events_duplicate_total")
                - testing.metric_total(metrics_before, "events_duplicate_total"),
            },
            "cem_processed_events": processed[0]["n"],
            "crm_versions_not_as_acknowledged": sum(crm_versions[c] != v for c, v in versions.items()),
            "cem_versions_behind": sum(cem_at.get(c) != crm_versions[c] for c in versions),
            "cem_interactions": testing.marked(cem_rows, set(interactions)),
            "crm_outbox_interaction_events": testing.marked(await outbox_by_summary(stack.crm_db, run), set(interactions)),
            "broker_client_log_lines": {name: broker_client_lines(stack.logs / f"{name}.log") for name in ("crm", "cem")},
            "timeline": mark,
            "seconds": mark.seconds(),
        }
    )
    report("broker_outages", figures, record_property)

    assert set(tally.counts) <= {200, 201}, figures  # every write answered at once, none refused or left hanging
    for name in ("unreachable", "restarted_empty"):
        outage_figures = figures[name]
        assert outage_figures["events_written"] > 0, figures
        assert outage_figures["waiting_in_outbox"] == outage_figures["events_written"], figures  # kept until sent
        assert outage_figures["crm_ready"] == 503, figures  # /ready says the broker is away
    # A broker that keeps its data: no requeue needed (the message says which side is stuck).
    assert figures["unreachable"]["cem_caught_up_by_itself"], json.dumps(figures["unreachable"], default=str)
    assert figures["restarted_empty"]["backlog_drained"], figures
    assert figures["crm_versions_not_as_acknowledged"] == 0 and figures["cem_versions_behind"] == 0, figures
    assert figures["cem_interactions"] == {"lost": 0, "doubled": 0, "unexpected": 0}, figures
    assert figures["crm_outbox_interaction_events"] == {"lost": 0, "doubled": 0, "unexpected": 0}, figures
    assert figures["cem_processed_events"] == total_events, figures  # each event applied once, none twice
    # The client's retries every 100 ms are summarised (each kind once per 10 s, with a count),
    # not written out: about 2,500 lines per service over these 15 s of outage before.
    for name, lines in figures["broker_client_log_lines"].items():
        assert lines["written"] <= 250 and lines["summarised"] > 0, (name, lines)


# --- 3. PostgreSQL away: 503, never 500, and recovery ------------------------------------------


@pytest.mark.timeout(240)
async def test_database_away_answers_503_never_500_and_both_services_recover_without_loss(
    stack_factory: Any, private_broker: DevBroker, record_property: Any
) -> None:
    """Both services reach PostgreSQL through a TCP proxy, cut for 4 s under writes (interactions
    over HTTP, outside events on Kafka) and reads on both services: clients get 503 problem+json
    with Retry-After, never a 500, and never wait without an answer; /ready says 503. Once the
    database is back, with no restart, everything written and published is on both sides
    exactly once."""
    mark = Timeline()
    run = f"pg-{uuid.uuid4().hex[:8]}"
    stack = stack_factory(private_broker.bootstrap)
    direct = {"CRM": stack.crm_db, "CEM": stack.cem_db}
    proxies: dict[str, testing.TcpProxy] = {}
    for prefix, url in direct.items():
        parsed = make_url(url)
        proxies[prefix] = testing.TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        await proxies[prefix].start()
    # The services reach their databases only through the proxies; this test reads them directly.
    stack.crm_db = make_url(direct["CRM"]).set(port=proxies["CRM"].port).render_as_string(hide_password=False)
    stack.cem_db = make_url(direct["CEM"]).set(port=proxies["CEM"].port).render_as_string(hide_password=False)
    writes, reads = PhasedTally(), PhasedTally()
    first_503: dict[str, Any] = {}
    ready_in_outage: dict[str, int] = {}
    try:
        await start_both(stack)
        mark("both services ready")
        assert stack.crm is not None and stack.cem is not None
        headers = testing.bearer(stack.key)
        crm = [httpx.AsyncClient(base_url=stack.crm.url, headers=headers, timeout=10)]
        cem = httpx.AsyncClient(base_url=stack.cem.url, headers=headers, timeout=10)
        publisher = testing.OutsidePublisher(private_broker.bootstrap, CX_INTERACTIONS)
        customers = await new_customers(crm, run, 4, writes)
        await testing.wait_for(lambda: cem_knows(direct["CEM"], dict.fromkeys(customers, 1)), timeout=20)
        mark("customers on both sides")
        load = InteractionLoad(run, customers, crm, publisher, writes, pace=0.05)
        stop = asyncio.Event()

        async def reader() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                customer_id = customers[n % len(customers)]
                for client, path in ((crm[0], f"/v1/customers/{customer_id}"), (cem, f"/v1/customers/{customer_id}/experience")):
                    try:
                        answer = await client.get(path)
                    except httpx.TransportError:
                        reads.record("no answer")
                        continue
                    reads.record(answer.status_code)
                    if answer.status_code == 503 and "read" not in first_503:
                        first_503["read"] = {
                            "content-type": answer.headers.get("content-type"),
                            "retry-after": answer.headers.get("retry-after"),
                        }
                await asyncio.sleep(0.03)

        running = [asyncio.create_task(load(stop)), asyncio.create_task(reader())]
        try:
            await asyncio.sleep(2)
            writes.phase = reads.phase = "outage"
            for proxy in proxies.values():
                await proxy.cut()
            mark("database cut off")
            cut_at = time.monotonic()
            await asyncio.sleep(2)
            ready_in_outage = {"crm": (await crm[0].get("/ready")).status_code, "cem": (await cem.get("/ready")).status_code}
            await asyncio.sleep(2)
            for proxy in proxies.values():
                await proxy.start()  # the database is back, on the same address
            mark("database back")
            outage_s = round(time.monotonic() - cut_at, 1)
            writes.phase = reads.phase = "after"
            await asyncio.sleep(3)
            stop.set()
            await asyncio.gather(*running)
            mark("load stopped")
            if await testing.settles(lambda: both_sides_hold(direct["CRM"], direct["CEM"], run, load.expected), timeout=45):
                mark("both sides hold every write and event")
            await asyncio.sleep(1)
            ready_after = {"crm": (await crm[0].get("/ready")).status_code, "cem": (await cem.get("/ready")).status_code}
        finally:
            stop.set()
            for task in running:
                task.cancel()
            await publisher.close()
            await crm[0].aclose()
            await cem.aclose()
    finally:
        await asyncio.to_thread(stack.stop)  # the proxies in this loop keep forwarding meanwhile
        for proxy in proxies.values():
            if proxy._server is not None and proxy._server.is_serving():
                await proxy.cut()

    counts = await exact_counts(direct["CRM"], direct["CEM"], run, load)
    figures = {
        "outage_s": outage_s,
        "write_attempts": {p: dict(c) for p, c in writes.phases.items()},
        "read_attempts": {p: dict(c) for p, c in reads.phases.items()},
        "first_503": first_503,
        "ready_during_outage": ready_in_outage,
        "ready_after": ready_after,
        "http_writes_acknowledged": len(load.http),
        "kafka_events_published": len(load.kafka),
        **counts,
        "timeline": mark,
        "seconds": mark.seconds(),
    }
    report("database_away", figures, record_property)

    for tally in (writes, reads):
        server_errors = {
            s: n for c in tally.phases.values() for s, n in c.items() if isinstance(s, int) and s >= 500 and s != 503
        }
        assert server_errors == {}, figures  # never a 500 (nor 502/504)
        assert tally["no answer"] == 0, figures  # every request answered, none left hanging
        assert tally.phases["outage"][503] > 0, figures
    assert first_503["read"] == {"content-type": "application/problem+json", "retry-after": "5"}, figures
    assert ready_in_outage == {"crm": 503, "cem": 503} and ready_after == {"crm": 200, "cem": 200}, figures
    assert_exact(counts, figures)


# --- 4. Duplicate delivery: the same event several times, one effect ----------------------------


async def test_the_same_event_delivered_several_times_has_one_effect_on_each_side(
    stack_factory: Any, private_broker: DevBroker, record_property: Any
) -> None:
    """Each outside interaction event published three times (twice back to back, once after the
    first copies were applied), each customer event the CRM sent published twice more (older
    versions after newer ones included), and HTTP writes sent three times with one
    Idempotency-Key: each consumer applies each event once and skips every other copy, and the
    projection stays at the newest version."""
    mark = Timeline()
    run = f"dup-{uuid.uuid4().hex[:8]}"
    stack = stack_factory(private_broker.bootstrap)
    await start_both(stack)
    mark("both services ready")
    assert stack.crm is not None and stack.cem is not None
    tally = testing.Tally()
    publisher = testing.OutsidePublisher(private_broker.bootstrap, CX_INTERACTIONS)
    async with stack.crm_client() as crm_client, stack.cem_client() as cem_client:
        crm = [crm_client]
        customers = await new_customers(crm, run, 6, tally)
        for customer_id in customers:  # versions 2 and 3
            for n in range(2):
                body = {"company": f"{run}-{n}"}
                await testing.write_until_acknowledged(crm, "PATCH", f"/v1/customers/{customer_id}", body, tally)
        # The same HTTP write sent three times with one Idempotency-Key: one row, one event.
        http_summaries = []
        for n in range(10):
            summary = f"{run}:http:{n}"
            body = {"customer_id": customers[n % len(customers)], "type": "call", "summary": summary}
            key = uuid.uuid4().hex
            answers = [await crm_client.post("/v1/interactions", json=body, headers={"Idempotency-Key": key}) for _ in range(3)]
            assert [a.status_code for a in answers] == [201, 201, 201]
            assert len({a.json()["id"] for a in answers}) == 1
            assert [a.headers.get("idempotent-replayed") for a in answers] == [None, "true", "true"]
            http_summaries.append(summary)
        await testing.wait_for(lambda: cem_knows(stack.cem_db, dict.fromkeys(customers, 3)), timeout=20)

        # Each outside event three times: two copies back to back, the third after the first
        # copies were applied (so duplicates meet both inside one poll and across polls).
        outside = [testing.outside_interaction(customers[n % len(customers)], f"{run}:kafka:{n}") for n in range(40)]
        for key, value in outside:
            await publisher.publish(key, value)
            await publisher.publish(key, value)
        kafka_summaries = {f"{run}:kafka:{n}" for n in range(40)}
        await testing.wait_for(
            lambda: both_sides_hold(stack.crm_db, stack.cem_db, run, kafka_summaries, set(http_summaries)), timeout=20
        )
        for key, value in outside:
            await publisher.publish(key, value)
        # Every customer event the CRM sent, twice more, as a relay would after a lost
        # acknowledgement (old versions after newer ones included).
        customer_events = await testing.db_rows(
            stack.crm_db, "SELECT key, value, headers FROM outbox WHERE topic = $1 ORDER BY id", CRM_CUSTOMERS
        )
        customers_topic = testing.OutsidePublisher(private_broker.bootstrap, CRM_CUSTOMERS)
        for _ in range(2):
            for row in customer_events:
                await customers_topic.publish(row["key"].encode(), row["value"])
        await customers_topic.close()
        await publisher.close()

        # Per consumer: the events it applies (distinct) and every copy it is handed.
        consumers = {
            "crm.interactions": ("CRM", f"{stack.group('CRM')}.interactions", len(outside), 3 * len(outside)),
            "cem.interactions": (
                "CEM",
                f"{stack.group('CEM')}.interactions",
                len(outside) + len(http_summaries),
                3 * len(outside) + len(http_summaries),
            ),
            "cem.crm-customers": ("CEM", f"{stack.group('CEM')}.crm-customers", len(customer_events), 3 * len(customer_events)),
        }
        expected = {k: {"applied": distinct, "skipped": copies - distinct} for k, (_, _, distinct, copies) in consumers.items()}

        async def handled() -> dict[str, dict[str, float]]:
            text = {"CRM": (await crm_client.get("/metrics")).text, "CEM": (await cem_client.get("/metrics")).text}
            return {
                k: {
                    "applied": testing.metric_total(text[side], "events_handled_total", consumer=name),
                    "skipped": testing.metric_total(text[side], "events_duplicate_total", consumer=name),
                }
                for k, (side, name, _, _) in consumers.items()
            }

        async def every_copy_handled() -> bool:
            seen = await handled()
            return all(seen[k]["applied"] + seen[k]["skipped"] >= copies for k, (_, _, _, copies) in consumers.items())

        await testing.settles(every_copy_handled, timeout=30)
        await asyncio.sleep(0.5)  # a copy handled twice would show now
        counted = await handled()
    await asyncio.to_thread(stack.stop)

    everything = kafka_summaries | set(http_summaries)
    crm_rows = await by_summary(stack.crm_db, "interactions", run)
    cem_rows = await by_summary(stack.cem_db, "touchpoint_interactions", run)
    profiles = await testing.db_rows(
        stack.cem_db, "SELECT crm_version, count(*) AS n FROM customer_profiles GROUP BY crm_version ORDER BY crm_version"
    )
    figures = {
        "outside_events": len(outside),
        "copies_each": 3,
        "customer_events": len(customer_events),
        "customer_event_copies_each": 3,
        "http_writes_sent_3_times": len(http_summaries),
        "per_consumer_expected": expected,
        "per_consumer_counted": counted,
        "crm_interactions": testing.marked(crm_rows, everything),
        "cem_interactions": testing.marked(cem_rows, everything),
        "crm_outbox_events": testing.marked(await outbox_by_summary(stack.crm_db, run), set(http_summaries)),
        "cem_profiles_by_version": {r["crm_version"]: r["n"] for r in profiles},
        "timeline": mark,
        "seconds": mark.seconds(),
    }
    report("duplicates", figures, record_property)

    # Each event applied once, every other copy skipped (the CRM's own HTTP interactions are
    # stored before they are published, so its consumer leaves them alone).
    assert counted == expected, figures
    assert figures["cem_profiles_by_version"] == {3: len(customers)}, figures  # no older copy went back
    for where in ("crm_interactions", "cem_interactions", "crm_outbox_events"):
        assert figures[where] == {"lost": 0, "doubled": 0, "unexpected": 0}, (where, figures)
