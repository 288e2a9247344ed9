"""How far a consumer reads ahead of what it has applied: each partition's share of one fetch
stays near `CONSUMER_PARTITION_FETCH_MAX_BYTES`, on the dev broker as on Apache Kafka. Tansu
gives each partition up to the fetch's whole limit, so `DEV_BROKER_SETTINGS` asks it for the
partition limit (with the 2 MiB default a consumer behind its publisher held 2 MiB per
partition, about 16 MB more in the CEM during an import)."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher

from cxkit.kafka.client import fetch_options, make_producer
from cxkit.settings import ServiceSettings

MESSAGE = b"x" * 700
PER_PARTITION = 4_000  # 2.8 MB per partition: several fetches' worth, all waiting before the first


async def test_a_consumer_behind_reads_ahead_about_the_partition_limit(
    kit_settings: ServiceSettings, topic: str, monkeypatch
) -> None:
    producer = make_producer(kit_settings)
    await producer.start()
    try:
        for partition in range(3):
            for _ in range(PER_PARTITION):
                await producer.send(topic, MESSAGE, key=uuid.uuid4().bytes, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()

    shares: list[int] = []  # the bytes of one partition in one fetch answer
    records = fetcher.MemoryRecords

    def measured(data: bytes) -> object:
        shares.append(len(data))
        return records(data)

    monkeypatch.setattr(fetcher, "MemoryRecords", measured)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kit_settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=kit_settings.consumer_fetch_max_wait_ms,
        **fetch_options(kit_settings),
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        read = 0
        while read < 3 * PER_PARTITION:
            batches = await consumer.getmany(timeout_ms=5_000)
            assert batches, f"nothing more after {read} messages"
            read += sum(len(messages) for messages in batches.values())
    finally:
        await consumer.stop()

    limit = kit_settings.consumer_partition_fetch_max_bytes
    sent = sorted(s for s in shares if s)  # a partition with nothing new answers empty
    # A fetch stops at a whole batch of the producer's, so a share may pass the limit by one.
    assert sent[-1] <= limit + kit_settings.kafka_producer_batch_bytes, sent[-5:]
    # The broker had more than the limit to give each time: what kept the shares down is the ask.
    assert sent[len(sent) // 2] >= limit // 2, sent
