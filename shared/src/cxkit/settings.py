"""Settings common to both services; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field
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
    db_pool_size: int = Field(10, description="Connections kept open per process.")
    db_max_overflow: int = Field(10, description="Extra connections allowed under bursts.")
    api_key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a verified API key is trusted without looking it up again; a revoked key stops working "
        "within this time (0: look it up on every request).",
    )
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    kafka_enable_idempotence: bool = Field(
        True, description="Idempotent producer: on for Apache Kafka, off for the dev broker (Tansu)."
    )
    kafka_client_id: str | None = Field(None, description="Kafka client id (defaults to the service name).")
    kafka_topic_partitions: int = Field(3, description="Partitions for topics this service creates.")
    kafka_topic_replication: int = Field(1, description="Replication factor for topics this service creates.")
    run_relay: bool = Field(True, description="Run the outbox relay inside the web process.")
    run_consumers: bool = Field(True, description="Run the event consumers inside the web process.")
    outbox_poll_interval_ms: int = Field(200, description="Relay poll interval when no write woke it.")
    outbox_batch_size: int = Field(500, description="Outbox rows sent per relay round.")
    outbox_retention_hours: int = Field(24, description="Sent outbox rows are deleted after this many hours.")
    idempotency_ttl_hours: int = Field(24, description="How long a write's `Idempotency-Key` answer is kept and replayed.")
    consumer_max_records: int = Field(1000, description="Messages fetched per consumer poll (one DB transaction).")
    consumer_max_retries: int = Field(5, description="Attempts for a failing message before it goes to the DLQ.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_json: bool = Field(True, description="JSON logs (production); false for readable terminal logs.")
    public_base_url: str = Field("http://127.0.0.1:8000", description="Base URL used in links this service hands out.")
