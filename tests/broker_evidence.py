"""What the broker and the databases held when a cross-service test failed: for each consumer
group of the stack, per partition of its topics, the offset it committed, how far the topic
goes, and every event below the committed offset that the consumer neither applied (its
`processed_events` row) nor sent to the DLQ nor was meant to skip. An event there was skipped
by the consumer; an event at or above the committed offset was never reached. Written next to
the failed test's logs (see `conftest.py`), so a rare loss leaves evidence to read."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from cxkit import testing
from cxkit.events.registry import CEM_FEEDBACK, CRM_CUSTOMERS, CX_INTERACTIONS, dlq_topic

# Each service's live consumers (`crm.consumers.live_consumers`, `cem.consumers.live_consumers`)
# by name suffix, the topics they read, and the event source they skip.
CONSUMERS = {
    "CRM": {"interactions": ([CX_INTERACTIONS], "urn:cx:crm-service"), "cem-feedback": ([CEM_FEEDBACK], None)},
    "CEM": {"crm-customers": ([CRM_CUSTOMERS], None), "interactions": ([CX_INTERACTIONS], None)},
}


async def _read_all(
    bootstrap: str, topics: list[str], seconds: float = 10.0
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """Every message of these topics, partition by partition (no group), up to their ends."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=5000)
    await reader.start()
    found: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
    try:
        known = await reader.topics()
        partitions = [TopicPartition(t, p) for t in topics if t in known for p in sorted(reader.partitions_for_topic(t) or [])]
        if not partitions:
            return found
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        deadline = asyncio.get_running_loop().time() + seconds
        quiet = 0
        while asyncio.get_running_loop().time() < deadline and quiet < 3:
            batches = await reader.getmany(*partitions, timeout_ms=300)
            quiet = 0 if batches else quiet + 1
            for tp, records in batches.items():
                found[tp].extend(records)
    finally:
        await reader.stop()
    return found


async def _committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=5000)
    await probe.start()
    try:
        return {tp: await probe.committed(tp) for tp in partitions}
    finally:
        await probe.stop()


def _event(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    try:
        doc = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    return {
        "offset": record.offset,
        "key": (record.key or b"").decode("utf-8", "replace"),
        "id": doc.get("id"),
        "type": doc.get("type"),
        "source": doc.get("source"),
        "summary": data.get("summary"),
        "timestamp": record.timestamp,
    }


async def collect(bootstrap: str, groups: dict[str, str], databases: dict[str, str]) -> dict[str, Any]:
    """`groups`: service prefix (CRM, CEM) -> its consumer group prefix; `databases`: prefix ->
    database URL."""
    topics = sorted({t for consumers in CONSUMERS.values() for ts, _ in consumers.values() for t in ts})
    on_topics = await _read_all(bootstrap, topics)
    dead = await _read_all(bootstrap, [dlq_topic(t) for t in topics])
    dead_letters: set[tuple[str, str, int, int]] = set()  # consumer, topic, partition, offset
    for records in dead.values():
        for record in records:
            headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}
            if "dlq.consumer" in headers:
                dead_letters.add(
                    (
                        headers["dlq.consumer"],
                        headers.get("dlq.original_topic", ""),
                        int(headers.get("dlq.original_partition", "-1")),
                        int(headers.get("dlq.original_offset", "-1")),
                    )
                )
    evidence: dict[str, Any] = {"partitions": {f"{tp.topic}/{tp.partition}": len(r) for tp, r in sorted(on_topics.items())}}
    for prefix, consumers in CONSUMERS.items():
        applied_rows = await testing.db_rows(databases[prefix], "SELECT consumer, event_id FROM processed_events")
        applied = {(r["consumer"], r["event_id"]) for r in applied_rows}
        for suffix, (consumer_topics, skipped_source) in consumers.items():
            name = f"{groups[prefix]}.{suffix}"
            partitions = [tp for tp in on_topics if tp.topic in consumer_topics]
            committed = await _committed(bootstrap, name, partitions)
            report: dict[str, Any] = {}
            for tp in sorted(partitions):
                upto = committed.get(tp) or 0
                skipped = [
                    _event(r)
                    for r in on_topics[tp]
                    if r.offset < upto
                    and (name, tp.topic, tp.partition, r.offset) not in dead_letters
                    and (event := _event(r))["id"] is not None
                    and event["source"] != skipped_source
                    and (name, event["id"]) not in applied
                ]
                unreached = [_event(r) for r in on_topics[tp] if r.offset >= upto]
                report[f"{tp.topic}/{tp.partition}"] = {
                    "committed": committed.get(tp),
                    "messages": len(on_topics[tp]),
                    "last_offset": on_topics[tp][-1].offset if on_topics[tp] else None,
                    "below_committed_not_applied": skipped[:200],
                    "not_reached": unreached[:200],
                }
            evidence[name] = report
    return evidence


def write(path: Path, bootstrap: str, groups: dict[str, str], databases: dict[str, str]) -> None:
    """`collect`, written as JSON to `path` (or the reason it could not be)."""
    try:
        found = asyncio.run(asyncio.wait_for(collect(bootstrap, groups, databases), 60))
    except BaseException as exc:  # evidence is best effort: never the reason a test run fails
        found = {"error": repr(exc)}
    path.write_text(json.dumps(found, indent=1, default=str))
