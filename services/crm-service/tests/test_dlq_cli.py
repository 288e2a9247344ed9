"""`crm dlq list` and `crm dlq redrive`: the real commands in a child process, against the test
database and broker, on dead letters of a consumer group of their own."""

from __future__ import annotations

import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from crm.config import CRMSettings
from crm.consumers import live_consumers
from crm.main import build_consumers
from cxkit import testing
from cxkit.dev_broker import DevBroker, dev_broker_env, free_port
from cxkit.dlq import REDRIVEN_FROM
from cxkit.events.registry import CX_INTERACTIONS, dlq_topic
from cxkit.kafka.client import ensure_topics

from .conftest import crm_command


async def crm(database_url: str, bootstrap: str, group: str, *args: str) -> tuple[int, str, str]:
    env = {**dev_broker_env("CRM"), "CRM_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CRM_CONSUMER_GROUP": group}
    return await crm_command(database_url, "dlq", *args, env=env)


async def sent_again(bootstrap: str, value: bytes) -> ConsumerRecord[bytes, bytes] | None:
    """The message on `cx.interactions.v1` with this value, if there is one."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        await reader.topics()
        partitions = [TopicPartition(CX_INTERACTIONS, p) for p in sorted(reader.partitions_for_topic(CX_INTERACTIONS) or [])]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        for _ in range(5):
            for records in (await reader.getmany(*partitions, timeout_ms=200)).values():
                for record in records:
                    if record.value == value:
                        return record
        return None
    finally:
        await reader.stop()


async def test_dead_letters_are_listed_and_the_events_not_applied_since_are_sent_again(
    broker: DevBroker, crm_settings: CRMSettings, crm_database_url: str
) -> None:
    group = f"dlq-cli-{uuid.uuid4().hex[:8]}"
    consumer = f"{group}.interactions"
    key, value = testing.outside_interaction(uuid.uuid4(), "Till 3")
    event_id = orjson.loads(value)["id"]
    await ensure_topics(crm_settings, [CX_INTERACTIONS])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for k, v, reason in ((key, value, "handler failed after 5 attempts: KeyError('x')"), (b"j", b"{oops", "not JSON")):
            headers = [
                ("content-type", b"application/cloudevents+json"),
                ("dlq.reason", reason.encode()),
                ("dlq.original_topic", CX_INTERACTIONS.encode()),
                ("dlq.original_partition", b"0"),
                ("dlq.original_offset", b"41"),
                ("dlq.consumer", consumer.encode()),
            ]
            await producer.send_and_wait(dlq_topic(CX_INTERACTIONS), value=v, key=k, headers=headers)
    finally:
        await producer.stop()

    async def listed() -> list[dict[str, object]]:
        code, out, err = await crm(crm_database_url, broker.bootstrap, group, "list", "--json")
        assert code == 0, err
        return sorted((orjson.loads(line) for line in out.splitlines()), key=lambda x: str(x["reason_kind"]))

    letters = await listed()
    assert [(x["reason_kind"], x["event_id"], x["applied"], x["original"]) for x in letters] == [
        ("handler_failed", event_id, False, f"{CX_INTERACTIONS}/0/41"),
        ("malformed", None, False, f"{CX_INTERACTIONS}/0/41"),
    ]
    code, out, err = await crm(crm_database_url, broker.bootstrap, group, "list", "--reason", "malformed")
    assert code == 0 and "1 dead letter(s)" in out and "not JSON" in out, out + err

    code, _, err = await crm(crm_database_url, broker.bootstrap, group, "redrive", "--dry-run")
    assert code == 0 and "1 event(s) to send again, 0 applied since, 1 left" in err, err
    code, _, err = await crm(crm_database_url, broker.bootstrap, group, "redrive", "--yes")
    assert code == 0 and "sent 1 event(s) again" in err, err
    again = await testing.wait_for(lambda: sent_again(broker.bootstrap, value), timeout=20, interval=0.2)
    assert again.key == key and dict(again.headers)["content-type"] == b"application/cloudevents+json"
    assert dict(again.headers)[REDRIVEN_FROM].startswith(f"{dlq_topic(CX_INTERACTIONS)}/".encode())  # the dead letter it was

    # Once the consumer has applied the event, it is shown as applied and not sent again.
    await testing.db_rows(
        crm_database_url,
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, now())",
        consumer,
        event_id,
    )
    assert [x["applied"] for x in await listed()] == [True, False]
    code, _, err = await crm(crm_database_url, broker.bootstrap, group, "redrive", "--yes")
    assert code == 0 and "0 event(s) to send again, 1 applied since" in err, err

    for args in (["list", "--reason", "bogus"], ["redrive", "--consumer", "nobody"]):
        code, _, err = await crm(crm_database_url, broker.bootstrap, group, *args)
        assert code == 2, (args, err)


def test_the_dlq_commands_know_every_live_consumer_and_its_topics(crm_settings: CRMSettings) -> None:
    built = build_consumers(crm_settings)(None)
    assert live_consumers(crm_settings) == {c.name: c.topics for c in built}


async def test_the_dlq_commands_say_in_one_line_when_the_broker_cannot_be_reached(crm_database_url: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    for args in (["list"], ["redrive", "--yes"]):
        code, _, err = await crm(crm_database_url, closed, "dlq-closed", *args)
        assert code == 1 and "Traceback" not in err, err
        [line] = [line for line in err.splitlines() if line.strip()]
        assert line.startswith("cannot reach the broker (CRM_KAFKA_BOOTSTRAP_SERVERS): "), line


async def test_what_a_dead_letter_says_is_shown_as_it_is(
    broker: DevBroker, crm_settings: CRMSettings, crm_database_url: str
) -> None:
    """A reason and an event id come from outside (a publisher's event, a key of its free JSON):
    a `[/x]` in one stopped `dlq list` with rich's MarkupError, and escape sequences in one
    reached the operator's terminal. Both are shown as text, the controls as their escapes."""
    group = f"dlq-cli-{uuid.uuid4().hex[:8]}"
    consumer = f"{group}.interactions"
    key, value = testing.outside_interaction(uuid.uuid4(), "Till 3")
    event = orjson.loads(value)
    event["id"] = "id-\x1b[2J-\u202e"
    reason = "invalid interaction.recorded event: data.metadata.[/x]\x1b]52;c;SGk=\x07: text must not contain NUL characters"
    await ensure_topics(crm_settings, [CX_INTERACTIONS])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.original_topic", CX_INTERACTIONS.encode()),
            ("dlq.original_partition", b"0"),
            ("dlq.original_offset", b"7"),
            ("dlq.consumer", consumer.encode()),
        ]
        await producer.send_and_wait(dlq_topic(CX_INTERACTIONS), value=orjson.dumps(event), key=key, headers=headers)
    finally:
        await producer.stop()

    code, out, err = await crm(crm_database_url, broker.bootstrap, group, "list", "--consumer", consumer)
    assert code == 0 and "MarkupError" not in err, err
    assert "data.metadata.[/x]\\x1b]52;c;SGk=\\x07:" in out, out
    assert "id-\\x1b[2J-\\u202e" in out, out
    assert not any(c in out for c in "\x1b\x07\u202e"), out
