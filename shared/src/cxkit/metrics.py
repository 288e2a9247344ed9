"""Prometheus metrics shared by both services.

One registry per process. With several uvicorn workers, set `PROMETHEUS_MULTIPROC_DIR` to an
empty directory before the workers start: each worker then writes its values to files there,
and `/metrics` (`exposition`) adds up every worker's, whichever worker answers the scrape.
The gauges say how they combine: the outbox gauges are the same database-wide figure from
whichever relay measured last, and a partition's lag comes from the worker that read it last
(`mostrecent`)."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_DIR_ENV):
    # A process the image's start command did not prepare the directory for (a CLI command, a
    # migration Job) would otherwise fail at its first metric. Emptying it is the start
    # command's job: a worker cannot tell stale files from its siblings'.
    os.makedirs(os.environ[MULTIPROC_DIR_ENV], exist_ok=True)

# Labels are bounded sets: `route` is the route template (`/r/{token}`, never the raw path, so
# no id or token becomes a label), `status_class` is 2xx..5xx, `reason` and `kind` are the
# names below.
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency, by route template and status class.",
    ["method", "route", "status_class"],
    # SPEC §6's p99 targets (25, 50, 100 ms) are bucket bounds, so histogram_quantile is exact there.
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_BACKLOG = Gauge(
    "outbox_backlog", "Outbox rows not yet acknowledged by the broker.", ["service"], multiprocess_mode="mostrecent"
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not yet acknowledged by the broker (0 when none).",
    ["service"],
    multiprocess_mode="mostrecent",
)
OUTBOX_FAILED_ROW_ATTEMPTS = Gauge(
    "outbox_failed_row_attempts",
    "Failed send attempts of the outbox row the last relay round stopped at (0 after a round that sent all it took); "
    "from 10 on (cxkit.kafka.outbox.STUCK_AFTER_ATTEMPTS), that row is likely to fail for good and holds back the rows "
    "after it.",
    ["service"],
    multiprocess_mode="mostrecent",
)
OUTBOX_SENT = Counter("outbox_sent_total", "Outbox rows the broker acknowledged.", ["topic"])
OUTBOX_RELAY_ERRORS = Counter("outbox_relay_errors_total", "Failed relay rounds, by what failed.", ["service", "kind"])
EVENTS_HANDLED = Counter("events_handled_total", "Events applied by a consumer.", ["consumer", "type"])
EVENTS_DUPLICATE = Counter("events_duplicate_total", "Redelivered events skipped.", ["consumer"])
DLQ_MESSAGES = Counter("dlq_messages_total", "Messages sent to the DLQ, by reason.", ["consumer", "topic", "reason"])
CONSUMER_ERRORS = Counter(
    "consumer_errors_total", "Failed consumer rounds (rewound and retried), by what failed.", ["consumer", "kind"]
)
CONSUMER_LAG = Gauge(
    "consumer_lag",
    "Messages on the partition not yet applied by the consumer group (`consumer`).",
    ["consumer", "topic", "partition"],
    multiprocess_mode="mostrecent",
)
WEBHOOK_DELIVERIES = Counter(
    "webhook_delivery_attempts_total",
    "Webhook delivery attempts, by outcome: succeeded, retried (will be tried again), failed (given up).",
    ["service", "outcome"],
)
WEBHOOK_BACKLOG = Gauge(
    "webhook_backlog", "Webhook deliveries not yet received nor given up.", ["service"], multiprocess_mode="mostrecent"
)

# `kind` of OUTBOX_RELAY_ERRORS and CONSUMER_ERRORS.
ERROR_KINDS = ("broker", "database", "other")
# `reason` of DLQ_MESSAGES.
DLQ_REASONS = ("malformed", "unknown_type", "invalid_data", "rejected", "handler_failed")


def exposition() -> tuple[bytes, str]:
    """The `/metrics` body and its content type: this process's metrics, or, in multiprocess
    mode, every worker's added up."""
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if not path:
        return generate_latest(), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST
