"""Event ingest: `interaction.recorded` events into both services, against raw aiokafka + COPY consumers."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from scripts.bench.config import ROOT
from scripts.bench.report import Metric, at_least
from scripts.bench.scenarios.context import BenchContext, CpuUse, median_of

from cxkit.events import decode_event, encode_event, new_event
from cxkit.events.payloads import InteractionRecorded
from cxkit.kafka.client import partition_for

INTERACTIONS_TOPIC = "cx.interactions.v1"
PROGRESS_INTERVAL_S = 1.0
RAW_CONSUMER = "raw aiokafka+COPY"
RAW_CONSUMERS = "raw consumers"


def _event_factory(source: str) -> Callable[[uuid.UUID, dt.datetime], bytes]:
    """Valid `interaction.recorded` events, fast: one built by `cxkit.events`, then copied with
    fresh ids (checked by `decode_event` below)."""
    payload = InteractionRecorded(
        interaction_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        type="purchase",
        channel="pos",
        touchpoint="checkout",
        occurred_at=dt.datetime.now(dt.UTC),
        summary="Store purchase, 3 items",
        amount=Decimal("42.50"),
        currency="EUR",
        metadata={"store": "berlin-01"},
    )
    template = orjson.loads(encode_event(new_event("interaction.recorded", source=source, subject=None, data=payload)))

    def make(customer_id: uuid.UUID, occurred_at: dt.datetime) -> bytes:
        cid = str(customer_id)
        data = {
            **template["data"],
            "interaction_id": str(uuid.uuid4()),
            "customer_id": cid,
            "occurred_at": occurred_at.isoformat(),
        }
        return orjson.dumps({**template, "id": str(uuid.uuid4()), "subject": cid, "data": data})

    return make


def _build_events(ctx: BenchContext, source: str, floor: dt.datetime) -> list[tuple[bytes, bytes]]:
    make = _event_factory(source)
    ids = ctx.data.customer_ids
    events = []
    for i in range(ctx.cfg.events):
        cid = ids[ctx.rng.randrange(len(ids))]
        events.append((str(cid).encode(), make(cid, floor + dt.timedelta(microseconds=i))))
    decode_event(events[0][1])  # raises if the contract moved
    return events


EVENT_HEADERS = [("content-type", b"application/cloudevents+json"), ("ce_type", b"interaction.recorded")]


async def _publish(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """Send every event (acks=all, keyed by customer as the services do) in record batches built
    here, so the producer outpaces any consumer and the figures are the consumers'. Returns
    (start, end) in epoch seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        started = time.time()
        partitions = sorted(await producer.partitions_for(topic))
        batches = {p: producer.create_batch() for p in partitions}
        sent = []
        for key, value in events:
            p = partition_for(key, partitions, partitions)  # the key's partition, as the services' producers pick it
            if batches[p].append(key=key, value=value, timestamp=None, headers=EVENT_HEADERS) is None:
                sent.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=key, value=value, timestamp=None, headers=EVENT_HEADERS)
                await asyncio.sleep(0)  # let the watchers run
        sent += [await producer.send_batch(b, topic, partition=p) for p, b in batches.items() if b.record_count()]
        await asyncio.gather(*sent)
        return started, time.time()
    finally:
        await producer.stop()


async def _create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


@dataclass
class IngestRound:
    rate: float
    first_applied_s: float  # after the first event was published
    publish_s: float
    applied: int
    complete: bool


async def _ours_ingest(ctx: BenchContext, round_no: int) -> tuple[dict[str, IngestRound], CpuUse]:
    source = f"bench/ingest-r{round_no}"
    floor = dt.datetime.now(dt.UTC)
    events = _build_events(ctx, source, floor)
    n = len(events)
    queries = {
        "crm-service": (ctx.crm, "FROM interactions WHERE occurred_at >= $1 AND source = $2"),
        "cem-service": (
            ctx.cem,
            "FROM touchpoint_interactions WHERE touchpoint = 'checkout' AND occurred_at >= $1 AND source = $2",
        ),
    }
    done: dict[str, float] = {}
    # Counted with the services' work: the broker's, the publisher's (the bench) and the
    # database's, the watcher's counts below included (one per service per second).
    meter = ctx.cpu_meter()
    publish = asyncio.create_task(_publish(ctx.stack.broker.bootstrap, INTERACTIONS_TOPIC, events))
    deadline = time.monotonic() + ctx.cfg.ingest_timeout
    counts = dict.fromkeys(queries, 0)
    # Counting what has arrived scans it, in the databases under test: seldom, so the watching
    # does not slow the watched. When the last row came is read from the rows themselves (each
    # service stamps `recorded_at` as it applies a poll), so it is exact whenever it is seen.
    while len(done) < len(queries) and time.monotonic() < deadline:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        for name, (conn, where) in queries.items():
            if name not in done:
                counts[name] = await conn.fetchval(f"SELECT count(*) {where}", floor, source)
                if counts[name] >= n:
                    last = await conn.fetchval(f"SELECT max(recorded_at) {where}", floor, source)
                    done[name] = last.timestamp()
    started, ended = await publish
    cpu = meter.stop()
    out = {}
    for name, (conn, where) in queries.items():
        first = await conn.fetchval(f"SELECT min(recorded_at) {where}", floor, source)
        finished = done.get(name, time.time())
        out[name] = IngestRound(
            rate=counts[name] / (finished - started),
            first_applied_s=(first.timestamp() - started) if first else float("nan"),
            publish_s=ended - started,
            applied=counts[name],
            complete=name in done,
        )
    return out, cpu


async def _raw_ingest(ctx: BenchContext, round_no: int) -> tuple[dict[str, IngestRound], CpuUse]:
    """Both lanes at once (as both services consume at once): one raw consumer per database."""
    bootstrap = ctx.stack.broker.bootstrap
    topic = f"bench.raw-interactions.r{round_no}"
    await _create_topic(bootstrap, topic)
    events = _build_events(ctx, f"bench/raw-r{round_no}", dt.datetime.now(dt.UTC))
    lanes = {"crm-service": ctx.server.dsn(ctx.crm_db), "cem-service": ctx.server.dsn(ctx.cem_db)}
    procs = {}
    for name, dsn in lanes.items():
        procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scripts.bench.raw_consumer", "--bootstrap", bootstrap, "--topic", topic,
            "--group", f"bench-raw-{name}-r{round_no}", "--dsn", dsn, "--count", str(len(events)),
            "--timeout", str(ctx.cfg.ingest_timeout), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
    for name, proc in procs.items():
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        if line.strip() != b"READY":
            raise RuntimeError(f"raw consumer ({name}) did not start: {line!r}")
    meter = ctx.cpu_meter(RAW_CONSUMERS, running=[proc.pid for proc in procs.values()])
    started, ended = await _publish(bootstrap, topic, events)
    results = {name: (await proc.communicate())[0] for name, proc in procs.items()}
    cpu = meter.stop()
    out = {}
    for name, stdout in results.items():
        result = orjson.loads(stdout.strip().splitlines()[-1])
        out[name] = IngestRound(
            rate=result["applied"] / (result["done"] - started),
            first_applied_s=result["first_applied"] - started,
            publish_s=ended - started,
            applied=result["applied"],
            complete=result["applied"] >= len(events),
        )
    return out, cpu


async def ingest(ctx: BenchContext) -> None:
    ours: list[dict[str, IngestRound]] = []
    raw: list[dict[str, IngestRound]] = []
    ours_cpu: list[CpuUse] = []
    raw_cpu: list[CpuUse] = []
    for round_no in range(1, ctx.cfg.rounds + 1):
        applied, used = await _ours_ingest(ctx, round_no)
        ours.append(applied)
        ours_cpu.append(used)
        ctx.sample_rss("an ingest round")
        await ctx.settle()
        applied, used = await _raw_ingest(ctx, round_no)
        raw.append(applied)
        raw_cpu.append(used)
    ctx.report.rounds["ingest"] = {
        "events_per_round": ctx.cfg.events,
        "ours": [{k: asdict(v) for k, v in r.items()} for r in ours],
        "raw": [{k: asdict(v) for k, v in r.items()} for r in raw],
        "ours_cpu_s": [u.parts for u in ours_cpu],
        "raw_cpu_s": [u.parts for u in raw_cpu],
    }
    # Both lanes share the machine, so its CPU is told once, per event published (each event
    # is applied by both services, or by both raw consumers).
    per_event = (
        f"CPU per event published (applied in both databases): ours {CpuUse.median(ours_cpu).describe(ctx.cfg.events)}; "
        f"raw {CpuUse.median(raw_cpu).describe(ctx.cfg.events)}"
    )
    for name in ("crm-service", "cem-service"):
        rate = median_of([r[name].rate for r in ours])
        raw_rate = median_of([r[name].rate for r in raw])
        incomplete = sum(1 for r in ours if not r[name].complete)
        note = f"{ctx.cfg.events:,} events per round into both services at once; raw: one consumer per database, also at once"
        if incomplete:
            note += f"; {incomplete} round(s) not finished within {ctx.cfg.ingest_timeout:.0f} s (rate from the progress)"
        short = name.split("-")[0]
        ctx.report.add(
            Metric(f"ingest_{short}_eps", f"ingest interaction events ({short})", "ev/s", ">= 5,000", rate, raw_rate,
                   RAW_CONSUMER, at_least(rate, 5000), note),
            Metric(f"ingest_{short}_vs_raw", f"ingest ({short}) vs raw", "ev/s", ">= 0.5x raw", rate, raw_rate, RAW_CONSUMER,
                   at_least(rate / raw_rate if raw_rate else None, 0.5), per_event if short == "crm" else ""),
        )  # fmt: skip
    first = median_of([max(r[n].first_applied_s for n in r) for r in ours])
    publish = median_of([max(r[n].publish_s for n in r) for r in ours])
    ctx.report.add(
        Metric("ingest_overlap_s", "ingest: applying starts before publishing ends", "s", "< publishing time", first, publish,
               "publishing took", first < publish,
               "seconds after the first event was published until the later service applied its first one"),
    )  # fmt: skip
