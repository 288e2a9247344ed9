"""Import job shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm.fields import EXAMPLE_IDS
from cxkit.http.pagination import Page

ImportStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

READ_EXAMPLE = {
    "id": EXAMPLE_IDS["import"],
    "status": "running",
    "filename": "customers.csv",
    "size_bytes": 5_242_880,
    "total_rows": 60000,
    "rows_read": 25000,
    "progress": 0.4167,
    "created": 24890,
    "skipped": 100,
    "failed": 10,
    "ignored_columns": None,
    "error": None,
    "created_at": "2026-11-23T10:00:00Z",
    "started_at": "2026-11-23T10:00:01Z",
    "finished_at": None,
    "errors_url": f"/v1/imports/{EXAMPLE_IDS['import']}/errors",
}


class ImportRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    status: ImportStatus = Field(description="queued, running, succeeded, failed or cancelled.")
    filename: str | None
    size_bytes: int
    total_rows: int | None = Field(description="Data rows in the file, once the worker has read it.")
    rows_read: int = Field(description="Rows done (committed): created + skipped + failed.")
    progress: float = Field(description="rows_read / total_rows, 0 to 1 (1 once the job succeeded).")
    created: int = Field(description="Customers created (each announced by `customer.created`).")
    skipped: int = Field(description="Rows whose customer exists already (email or external_id taken).")
    failed: int = Field(description="Rows refused (invalid, repeated in the file, unknown campaign).")
    ignored_columns: str | None = Field(description="Columns of the header the import does not know, comma-separated.")
    error: str | None = Field(description="Why a failed job failed (what committed before stays imported and counted).")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    errors_url: str = Field(description="Where the skipped and failed rows are listed, as CSV.")

    @classmethod
    def of(cls, job: dict[str, Any]) -> ImportRead:
        total = job["total_rows"]
        if job["status"] == "succeeded":
            progress = 1.0
        elif total:
            progress = round(min(job["rows_read"] / total, 1.0), 4)
        else:
            progress = 0.0
        return cls(
            **{k: job[k] for k in cls.model_fields if k in job},
            progress=progress,
            errors_url=f"/v1/imports/{job['id']}/errors",
        )


class ImportPage(Page[ImportRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})
