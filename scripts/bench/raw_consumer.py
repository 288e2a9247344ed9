"""The raw ingest baseline: a plain aiokafka consumer that COPYs each poll's interaction events
into a scratch table (`bench_raw_ingest`) and then commits the offsets. No envelope
validation, no idempotency table, no projections: the floor a product consumer stands on.

    python -m scripts.bench.raw_consumer --bootstrap H:P --topic T --group G --dsn DSN --count N

Prints `READY` once it holds its partitions, then one JSON line:
{"applied": n, "first_applied": epoch s, "done": epoch s}."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
import uuid

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

COLUMNS = ("interaction_id", "customer_id", "type", "occurred_at", "event")


async def consume(bootstrap: str, topic: str, group: str, dsn: str, count: int, limit_s: float) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_raw_ingest "
        "(interaction_id uuid, customer_id uuid, type text, occurred_at timestamptz, event jsonb)"
    )
    await conn.execute("TRUNCATE bench_raw_ingest")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,  # as the services' CONSUMER_MAX_RECORDS default
    )
    await consumer.start()
    applied, first_applied, ready = 0, 0.0, False
    deadline = time.monotonic() + limit_s
    try:
        while applied < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            if not ready and consumer.assignment():
                print("READY", flush=True)
                ready = True
            records = []
            for messages in batches.values():
                for message in messages:
                    data = orjson.loads(message.value or b"{}")["data"]
                    records.append(
                        (
                            uuid.UUID(data["interaction_id"]),
                            uuid.UUID(data["customer_id"]),
                            data["type"],
                            dt.datetime.fromisoformat(data["occurred_at"]),
                            (message.value or b"").decode(),
                        )
                    )
            if not records:
                continue
            async with conn.transaction():
                await conn.copy_records_to_table("bench_raw_ingest", records=records, columns=COLUMNS)
            await consumer.commit()
            applied += len(records)
            if not first_applied:
                first_applied = time.time()
    finally:
        await consumer.stop()
        await conn.close()
    return {"applied": applied, "first_applied": first_applied, "done": time.time()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    result = asyncio.run(consume(args.bootstrap, args.topic, args.group, args.dsn, args.count, args.timeout))
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
