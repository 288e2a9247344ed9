"""Document output shapes (uploads are multipart/form-data, see the router)."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field

from crm.documents.upload import MAX_TEXT_LENGTH
from crm.fields import EXAMPLE_IDS
from cxkit.fields import InputModel, Integer, forbid_nul
from cxkit.http.pagination import Page

READ_EXAMPLE = {
    "id": EXAMPLE_IDS["document"],
    "customer_id": EXAMPLE_IDS["customer"],
    "deal_id": EXAMPLE_IDS["deal"],
    "filename": "proposal-2026.pdf",
    "content_type": "application/pdf",
    "size_bytes": 482113,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "description": "Signed proposal",
    "uploaded_by": "sales-frontend",
    "created_at": "2026-11-23T10:00:00Z",
    "download_url": f"/v1/documents/{EXAMPLE_IDS['document']}/content",
}
UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "anyOf": [{"required": ["customer_id"]}, {"required": ["deal_id"]}],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "minLength": 1,
            "description": "The file (not empty); its part's Content-Type is checked.",
        },
        "customer_id": {"type": "string", "format": "uuid", "description": "The customer it belongs to."},
        "deal_id": {"type": "string", "format": "uuid", "description": "Or a deal (its customer is implied)."},
        "description": {"type": "string", "maxLength": MAX_TEXT_LENGTH},
    },
}
# Its text parts refuse NUL as a JSON body's do (crm.documents.upload), and say so alike.
forbid_nul(UPLOAD_SCHEMA)
UPLOAD_EXAMPLE = {"customer_id": EXAMPLE_IDS["customer"], "description": "Signed proposal", "file": "(binary)"}


class DocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    customer_id: uuid.UUID
    deal_id: uuid.UUID | None
    filename: str
    content_type: str
    size_bytes: int
    sha256: str = Field(description="SHA-256 of the content, hex.")
    description: str | None
    uploaded_by: str | None
    created_at: dt.datetime
    download_url: str = Field(description="Download with an API key (`read`).")

    @classmethod
    def of(cls, document: object) -> DocumentRead:
        values = {k: getattr(document, k) for k in cls.model_fields if k != "download_url"}
        return cls(**values, download_url=f"/v1/documents/{values['id']}/content")


class DocumentPage(Page[DocumentRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})


class ShareRequest(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"expires_in": 86400}]})

    expires_in: Integer = Field(3600, ge=60, description="Seconds the link works (at most the configured maximum).")


class ShareLink(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": f"http://127.0.0.1:8001/v1/shared/documents/{EXAMPLE_IDS['document']}?expires=1795000000&signature=U852dvThVMd8...",
                    "expires_at": "2026-11-24T10:00:00Z",
                }
            ]
        }
    )

    url: str = Field(description="Works without an API key until `expires_at`.")
    expires_at: dt.datetime
