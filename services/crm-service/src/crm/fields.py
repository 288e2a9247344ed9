"""Input field types every CRM schema shares, so bad input is a 422 and never a 500.

PostgreSQL refuses NUL characters in text and JSONB, orjson refuses integers beyond 64 bits,
and money has a fixed precision: all three are caught here, at the edge."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import Header, Path
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

MAX_JSON_BYTES = 16 * 1024


def has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 20:
        return False
    if isinstance(value, dict):
        return any(has_nul(k, depth + 1) or has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v, depth + 1) for v in value)
    return False


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    """Free JSON that fits a row: serialisable, at most 16 KiB."""
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"not storable as JSON: {exc}") from None
    if size > MAX_JSON_BYTES:
        raise ValueError(f"at most {MAX_JSON_BYTES} bytes of JSON")
    return value


class InputModel(BaseModel):
    """Base of request bodies: unknown fields refused, no NUL characters anywhere."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


FreeJSON = Annotated[dict[str, Any], AfterValidator(bounded_json)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2, examples=["12500.00"])]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.", examples=["EUR"])]


def in_utc(value: dt.datetime) -> dt.datetime:
    """Aware times are stored in UTC; one that leaves the calendar when shifted is invalid."""
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


Timestamp = Annotated[AwareDatetime, AfterValidator(in_utc)]
Tag = Annotated[str, Field(min_length=1, max_length=50)]
Probability = Annotated[Decimal, Field(ge=0, le=1, max_digits=4, decimal_places=3)]

# Query parameters.
SearchText = Annotated[str, AfterValidator(no_nul)]


EXAMPLE_IDS = {
    "customer": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "lead": "7c1e0f8a-3b5d-4e6f-8a9b-0c1d2e3f4a5b",
    "deal": "3a8b9c0d-1e2f-4a5b-8c6d-7e8f9a0b1c2d",
    "pipeline": "9d7ae5c4-6b4e-5a8d-9c1f-2b3a4c5d6e7f",
    "stage": "1f2e3d4c-5b6a-4978-8a9b-cdef01234567",
    "interaction": "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c",
    "task": "8b7a6f5e-4d3c-4b2a-9180-7f6e5d4c3b2a",
    "campaign": "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
    "member": "6f5e4d3c-2b1a-4098-8f7e-6d5c4b3a2918",
    "document": "4d5e6f7a-8b9c-4d0e-8f1a-2b3c4d5e6f7a",
}


def id_path(kind: str) -> Any:
    """A path id with an example, so every operation's parameters carry one in the docs."""
    return Path(description=f"The {kind}'s id.", examples=[EXAMPLE_IDS[kind]])


CustomerIdPath = Annotated[uuid.UUID, id_path("customer")]
LeadIdPath = Annotated[uuid.UUID, id_path("lead")]
DealIdPath = Annotated[uuid.UUID, id_path("deal")]
PipelineIdPath = Annotated[uuid.UUID, id_path("pipeline")]
InteractionIdPath = Annotated[uuid.UUID, id_path("interaction")]
TaskIdPath = Annotated[uuid.UUID, id_path("task")]
CampaignIdPath = Annotated[uuid.UUID, id_path("campaign")]
MemberIdPath = Annotated[uuid.UUID, id_path("member")]
DocumentIdPath = Annotated[uuid.UUID, id_path("document")]

IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=200, description="The ETag you read; 412 if the resource changed since."),
]
