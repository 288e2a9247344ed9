"""Kafka plumbing: producer factory, topic creation, outbox relay, consumer runner with DLQ."""
