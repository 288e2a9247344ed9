"""crm-service settings: environment variables prefixed `CRM_`."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from cxkit.settings import ServiceSettings

DEFAULT_DOCUMENT_TYPES = [
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "text/plain",
    "text/csv",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/zip",
    "message/rfc822",
]


class CRMSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_", extra="ignore")

    service_name: str = "crm-service"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/crm"
    public_base_url: str = "http://127.0.0.1:8001"
    consumer_group: str = Field("crm-service", description="Kafka consumer group of this service.")
    default_currency: str = Field("EUR", min_length=3, max_length=3, description="Currency of deals created without one.")
    documents_dir: str = Field("./var/documents", description="Where uploaded documents are stored.")
    documents_max_bytes: int = Field(10 * 1024 * 1024, description="Largest document accepted (bytes).")
    documents_allowed_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DOCUMENT_TYPES),
        description="Content types accepted for documents (JSON list in the environment).",
    )
    documents_signing_secret: SecretStr | None = Field(
        None,
        description="HMAC secret of shared document links. Unset: a random one per process start "
        "(links then die on restart and differ between replicas; set it in production).",
    )
    followup_due_hours: int = Field(
        24,
        ge=1,
        le=24 * 365,
        description="A follow-up task made for a CEM follow-up request (a detractor, an unhappy CSAT or CES answer) is "
        "due this many hours after the request.",
    )
    followup_escalation_owner: str | None = Field(
        None,
        max_length=200,
        description="Who a follow-up task is escalated to when the CEM reports it overdue (`followup.overdue`): the "
        "task gets this second owner (`escalated_to`) and urgent priority, once. Unset: only the priority is raised.",
    )
    run_task_reminders: bool = Field(
        True,
        description="Announce `task.overdue` inside the web process when an open task's due time passes (once per due "
        "time; replicas share the work).",
    )
    task_reminders_interval_s: float = Field(
        30.0, gt=0, description="How often the reminders look for open tasks whose due time has passed."
    )
    documents_share_max_seconds: int = Field(7 * 24 * 3600, description="Longest lifetime of a shared document link.")
    run_imports: bool = Field(True, description="Run the import-job worker (`POST /v1/imports`) inside the web process.")
    imports_max_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Largest CSV accepted by `POST /v1/imports` (bytes).")
    imports_chunk_rows: int = Field(
        5000, ge=1, le=50_000, description="Rows an import job commits at a time (its resume point after a restart)."
    )
    imports_writers: int = Field(2, ge=1, le=8, description="Chunks an import job writes at once, each on its own connection.")
    imports_retention_days: int = Field(
        30,
        ge=1,
        description="Finished import jobs (succeeded, failed or cancelled) are deleted, with their refused rows, this many "
        "days after they ended.",
    )
    imports_poll_seconds: float = Field(
        2.0, gt=0, description="How often the import worker looks for jobs left by other replicas or a restart."
    )
