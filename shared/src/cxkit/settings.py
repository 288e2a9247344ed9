"""Settings common to both services; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from limits import parse
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Everything a service reads from its environment (prefix set by the subclass)."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    service_name: str = Field("service", description="Name in logs, metrics and Kafka client ids.")
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/service",
        description=(
            "SQLAlchemy async URL of the service's PostgreSQL database (postgresql+asyncpg://...); "
            "`make run` points it at its embedded server unless set."
        ),
    )
    db_pool_size: int = Field(10, ge=1, description="Connections kept open per process.")
    db_max_overflow: int = Field(10, ge=0, description="Extra connections allowed under bursts.")
    api_key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a verified API key is trusted without looking it up again; a revoked key stops working "
        "within this time (0: look it up on every request; requests in flight at once share one lookup).",
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=1,
        description="Largest request body accepted (bytes); a larger one gets 413 problem+json before it is read "
        "(by Content-Length, or while a chunked body arrives). Multipart uploads (documents) have their own limit.",
    )
    rate_limit_enabled: bool = Field(True, description="Apply the rate limits below (429 problem+json with Retry-After).")
    rate_limit_per_key: str = Field(
        "200000/minute",
        description="Requests per API key, all endpoints together, in `limits` notation (`600/minute`, "
        "`100/10 seconds`). The default (about 3,300 req/s) only stops runaway clients and leaves `make bench` "
        "(~2,000 req/s from one key) alone: set it to what one integration may use.",
    )
    rate_limit_failed_auth: str = Field(
        "100/minute",
        description="Requests with an unknown, revoked or expired API key per client address; past it they get 429 instead of "
        "401 (a valid key still passes).",
    )
    rate_limit_strategy: Literal["fixed-window", "moving-window", "sliding-window-counter"] = Field(
        "fixed-window",
        description="`limits` strategy: fixed-window costs one counter update per request; moving-window is exact "
        "but keeps one entry per request in the window.",
    )
    rate_limit_storage_url: str | None = Field(
        None,
        description="Where the counts live: unset keeps them in the process; `async+redis://host:6379/0` shares them "
        "between replicas (if Redis is unreachable, requests are let through and a warning is logged).",
    )
    rate_limit_key_prefix: str | None = Field(
        None, description="Prefix of the rate-limit keys in shared storage (defaults to the service name)."
    )
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    kafka_enable_idempotence: bool = Field(
        True, description="Idempotent producer: on for Apache Kafka, off for the dev broker (Tansu)."
    )
    kafka_client_id: str | None = Field(None, description="Kafka client id (defaults to the service name).")
    kafka_topic_partitions: int = Field(3, ge=1, description="Partitions for topics this service creates.")
    kafka_topic_replication: int = Field(1, ge=1, description="Replication factor for topics this service creates.")
    kafka_producer_batch_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Most bytes of messages the producer sends to one partition as one batch (at most 1 MiB, Apache "
        "Kafka's default message size limit); a message waits at most 2 ms for others to join it. A relay round sends "
        "up to `OUTBOX_BATCH_SIZE` events at once: relaying an import's 200,000 events took the web process 8.5 s of "
        "CPU in aiokafka's own 16 KiB batches, 5.7 s in 256 KiB ones.",
    )
    run_relay: bool = Field(True, description="Run the outbox relay inside the web process.")
    run_consumers: bool = Field(True, description="Run the event consumers inside the web process.")
    outbox_poll_interval_ms: int = Field(200, gt=0, description="Relay poll interval when no write woke it.")
    outbox_batch_size: int = Field(500, ge=1, description="Outbox rows sent per relay round.")
    outbox_retention_hours: int = Field(
        24,
        ge=0,
        description="Sent outbox rows are deleted after this many hours, counted from when they were sent (0: at the "
        "next housekeeping round, every 10 minutes); `outbox-requeue` can send again only what is still kept.",
    )
    idempotency_ttl_hours: int = Field(24, ge=1, description="How long a write's `Idempotency-Key` answer is kept and replayed.")
    processed_events_retention_days: int = Field(
        35,
        ge=2,
        description="How long a consumer remembers the id of an event it applied (`processed_events`), so that a "
        "redelivery of it changes nothing; older ids are deleted. Keep it above the DLQ topics' retention (30 days as "
        "deployed): `dlq redrive` refuses dead letters older than this less one day, because the other consumers may "
        "have forgotten that they applied them.",
    )
    consumer_fetch_max_wait_ms: int = Field(
        500,
        ge=0,
        description="Longest a consumer's fetch waits at the broker for new messages. Apache Kafka answers as soon as one "
        "arrives, so this only sets how often an idle consumer asks. The dev broker (Tansu) holds every fetch this long, "
        "so it also delays each event: `make run`, the tests and `make bench` set 20 there "
        "(`cxkit.dev_broker.DEV_BROKER_SETTINGS`).",
    )
    consumer_idle_fetch_max_wait_ms: int | None = Field(
        None,
        ge=0,
        description="Fetch wait of a consumer that has had no message for a second; the first message sets "
        "`CONSUMER_FETCH_MAX_WAIT_MS` again. Unset: that one always, right for Apache Kafka, which answers a fetch as "
        "soon as a message arrives. On the dev broker (Tansu), which holds each fetch for its whole wait, a 20 ms wait "
        "made idle consumers fetch 50 times a second: `make run` idled at 40 % of a core (the two services 9 % each, "
        "the broker 22 %). `make run`, the tests and `make bench` set 250 there, for 9.5 %; the first event after a quiet "
        "second then waits up to that long (`cxkit.dev_broker.DEV_BROKER_SETTINGS`).",
    )
    consumer_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="A consumer that sends no heartbeat for this long leaves its group and its partitions go to the "
        "others; it heartbeats every third of it. Apache Kafka accepts 6,000 to 1,800,000 by default. The dev broker "
        "(Tansu) holds each join of a group for half of it, so every consumer start waited 5 s: `make run`, the tests "
        "and `make bench` set 3,000 there (`cxkit.dev_broker.DEV_BROKER_SETTINGS`).",
    )
    consumer_max_records: int = Field(1000, ge=1, description="Messages fetched per consumer poll (one DB transaction).")
    consumer_fetch_max_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="Most bytes one fetch brings from the broker, all partitions together. A consumer reads ahead while "
        "it writes: this bounds what waits in memory (with aiokafka's default, 50 MiB, a CEM consumer behind its "
        "publisher held three fetch responses of 5 MB each plus their decoded records). A larger message still comes, alone. "
        "The dev broker (Tansu) gives each partition up to this many bytes, ignoring "
        "`CONSUMER_PARTITION_FETCH_MAX_BYTES`: `make run`, the tests and `make bench` set 524,288 there "
        "(`cxkit.dev_broker.DEV_BROKER_SETTINGS`).",
    )
    consumer_partition_fetch_max_bytes: int = Field(
        512 * 1024, ge=1024, description="Most bytes one fetch brings from one partition (a larger message still comes, alone)."
    )
    consumer_max_retries: int = Field(
        5,
        ge=1,
        le=10,
        description="Attempts (1 to 10) at applying alone each event of a poll whose transaction failed, before the "
        "event goes to the DLQ; after each failed attempt it waits 50 ms, doubling up to 1 s, and its partition with it.",
    )
    run_webhook_worker: bool = Field(True, description="Run the webhook delivery worker inside the web process.")
    webhook_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=120,
        description="Longest one delivery attempt may take, from connecting to the answer's status line (then it is retried).",
    )
    webhook_retry_base_seconds: float = Field(
        5.0,
        gt=0,
        description="First retry delay of a failed webhook delivery; each further retry waits twice as long (with "
        "jitter: between half and all of it), up to `webhook_retry_max_seconds`.",
    )
    webhook_retry_max_seconds: float = Field(3600.0, gt=0, description="Longest wait between two attempts of a delivery.")
    webhook_max_age_hours: float = Field(
        24.0, gt=0, description="A webhook delivery still failing this long after it was queued is given up."
    )
    webhook_failures_before_disable: int = Field(
        100,
        ge=1,
        description="Consecutive failed attempts (no success between them, any event) after which a webhook subscription "
        "is disabled; its undelivered events wait until it is enabled again. A 410 answer disables it at once.",
    )
    webhook_allow_private_targets: bool = Field(
        False,
        description="Let webhooks target private, loopback and link-local addresses (refused by default, so a "
        "subscription cannot reach the internal network); the tests and a local set-up turn it on.",
    )
    webhook_proxy_url: str | None = Field(
        None,
        description="Send webhook deliveries through this HTTP proxy (`http://egress.internal:3128`), for networks "
        "whose only way out is one; https targets are tunnelled through it (CONNECT). The SSRF guard still checks "
        "each target before each delivery, but the proxy makes the connection, so the addresses it reaches are its to "
        "police. Unset: deliveries connect directly (the `HTTP(S)_PROXY` environment variables are not used).",
    )
    webhook_proxy_resolves: bool = Field(
        False,
        description="With `WEBHOOK_PROXY_URL`, for networks where only the proxy can resolve outside names: target "
        "host names are not looked up here (they would not resolve), so the SSRF guard judges literal addresses as "
        "always and refuses names that are local by their form (localhost, a single label, .local, .internal, "
        ".home.arpa); the proxy must refuse private addresses itself. Needs `WEBHOOK_PROXY_URL`.",
    )
    webhook_poll_interval_ms: int = Field(
        1000, ge=10, description="How often the webhook worker looks for retries that came due (new events wake it)."
    )
    webhook_batch_size: int = Field(100, ge=1, le=1000, description="Webhook deliveries sent at once per worker round.")
    webhook_log_retention_days: int = Field(
        7, ge=1, description="Delivered and given-up webhook deliveries (the delivery log) are deleted after this many days."
    )
    webhook_subscription_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long the outbox relay trusts its list of enabled webhook subscriptions; a change made on "
        "another replica applies to events relayed after this time.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_json: bool = Field(True, description="JSON logs (production); false for readable terminal logs.")
    public_base_url: str = Field("http://127.0.0.1:8000", description="Base URL used in links this service hands out.")
    dashboard_session_secret: SecretStr | None = Field(
        None,
        description="Key that signs the `/dashboard` session cookie and its form tokens. Unset: a random one per process "
        "start (sessions then end on restart and differ between replicas; set it in production).",
    )
    dashboard_session_hours: float = Field(
        8.0, gt=0, description="How long a `/dashboard` sign-in lasts before the API key must be entered again."
    )

    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins whose browser pages may call the API (CORS), as a JSON list: "
        '`["https://app.example.com", "http://localhost:5173"]`; `["*"]` allows any. Empty: no CORS headers, and '
        "browsers refuse calls from pages of other origins (the dashboards and the respondent page need none).",
    )
    cors_max_age_seconds: int = Field(
        600, ge=0, le=86_400, description="How long a browser may reuse a CORS preflight answer (seconds)."
    )

    @field_validator("cors_allow_origins")
    @classmethod
    def _valid_origins(cls, values: list[str]) -> list[str]:
        return [value if value == "*" else _origin(value) for value in values]

    @field_validator("webhook_proxy_url")
    @classmethod
    def _valid_proxy_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(f"not a proxy URL like `http://egress.internal:3128`: {value!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"not a proxy URL like `http://egress.internal:3128`: {value!r}")
        return value

    @model_validator(mode="after")
    def _proxy_resolves_needs_a_proxy(self) -> ServiceSettings:
        if self.webhook_proxy_resolves and not self.webhook_proxy_url:
            raise ValueError("WEBHOOK_PROXY_RESOLVES needs WEBHOOK_PROXY_URL: without a proxy, names are resolved here")
        return self

    @field_validator("rate_limit_per_key", "rate_limit_failed_auth")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like `600/minute`: {value!r}") from exc
        return value


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> str:
    """`value` as browsers send it in `Origin` (lower case, no default port, no trailing slash),
    which CORS compares as a string; ValueError if it is not an origin."""
    parts = urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"not an origin like `https://app.example.com` (scheme, host, optional port): {value!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")
