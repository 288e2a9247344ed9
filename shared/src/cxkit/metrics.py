"""Prometheus metrics shared by both services (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
OUTBOX_BACKLOG = Gauge("outbox_backlog", "Outbox rows not yet acknowledged by the broker.")
OUTBOX_SENT = Counter("outbox_sent_total", "Outbox rows the broker acknowledged.", ["topic"])
OUTBOX_FAILURES = Counter("outbox_send_failures_total", "Failed relay rounds.")
EVENTS_HANDLED = Counter("events_handled_total", "Events applied by a consumer.", ["consumer", "type"])
EVENTS_DUPLICATE = Counter("events_duplicate_total", "Redelivered events skipped.", ["consumer"])
EVENTS_FAILED = Counter("events_failed_total", "Messages sent to the DLQ.", ["consumer", "topic"])
CONSUMER_LAG = Gauge("consumer_lag", "Messages behind the partition end.", ["consumer", "topic", "partition"])
