"""crm-service settings: environment variables prefixed `CRM_`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cxkit.settings import ServiceSettings


class CRMSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_", extra="ignore")

    service_name: str = "crm-service"
    database_url: str = "sqlite+aiosqlite:///./var/crm.db"
    public_base_url: str = "http://127.0.0.1:8001"
    consumer_group: str = Field("crm-service", description="Kafka consumer group of this service.")
    documents_dir: str = Field("./var/documents", description="Where uploaded documents are stored.")
    documents_max_bytes: int = Field(10 * 1024 * 1024, description="Largest document accepted (bytes).")
