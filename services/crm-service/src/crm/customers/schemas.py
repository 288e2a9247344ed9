"""Customer input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from crm.customers.models import ChangeVia
from crm.fields import EXAMPLE_IDS, FreeJSON, Tag
from cxkit.fields import InputModel, PatchModel
from cxkit.http.batch import BATCH_MAX, BatchBody, BatchItemProblem, each_item
from cxkit.http.pagination import Page

ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LifecycleStage = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "churned"]

EXAMPLE = {
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "phone": "+44 20 7946 0018",
    "company": "Analytical Engines Ltd",
    "lifecycle_stage": "lead",
    "owner": "sam@yourcompany.example",
    "tags": ["vip", "newsletter"],
    "attributes": {"plan": "pro"},
    "source": "webshop",
}
READ_EXAMPLE = {
    **EXAMPLE,
    "id": EXAMPLE_IDS["customer"],
    "campaign_id": None,
    "survey_opt_out": False,
    "version": 1,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:00:00Z",
    "erased_at": None,
    "merged_into_id": None,
    "external_id": None,
}


class CustomerCreate(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    email: EmailStr = Field(description="Unique, compared case-insensitively.")
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=50)
    company: str | None = Field(None, max_length=200)
    lifecycle_stage: LifecycleStage = "lead"
    owner: str | None = Field(None, max_length=200, description="Who in the company owns this customer.")
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    attributes: FreeJSON = Field(default_factory=dict, description="Free JSON (at most 16 KiB).")
    source: str | None = Field(None, max_length=100)
    campaign_id: uuid.UUID | None = Field(None, description="The campaign the customer came from (must exist).")
    survey_opt_out: bool = Field(False, strict=True, description="True: never invite this customer to surveys.")
    external_id: ExternalId | None = Field(
        None, description="The customer's id in another system (shop, billing); unique when set."
    )


# Fields a PATCH may not set to null (they always have a value).
_NOT_NULL = ("email", "name", "lifecycle_stage", "tags", "attributes", "survey_opt_out")


class CustomerUpdate(PatchModel):
    """Only the fields sent are changed; `tags` and `attributes` are replaced as a whole."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"lifecycle_stage": "customer", "tags": ["vip"], "owner": "kim@yourcompany.example"}]}
    )

    email: EmailStr | None = None
    name: str | None = Field(None, min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=50)
    company: str | None = Field(None, max_length=200)
    lifecycle_stage: LifecycleStage | None = None
    owner: str | None = Field(None, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=50)
    attributes: FreeJSON | None = None
    source: str | None = Field(None, max_length=100)
    campaign_id: uuid.UUID | None = None
    survey_opt_out: bool | None = Field(None, strict=True)
    external_id: ExternalId | None = None

    not_null = _NOT_NULL


class CustomerMerge(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"duplicate_id": "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}]})

    duplicate_id: uuid.UUID = Field(description="The customer folded into this one (the survivor).")


class CustomerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    email: str | None
    name: str | None
    phone: str | None
    company: str | None
    lifecycle_stage: str
    owner: str | None
    tags: list[str]
    attributes: dict[str, Any]
    source: str | None
    campaign_id: uuid.UUID | None
    survey_opt_out: bool
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    erased_at: dt.datetime | None = Field(None, description="Set once personal data was erased (GDPR).")
    merged_into_id: uuid.UUID | None = Field(None, description="Set on a duplicate folded into another customer.")
    external_id: str | None = Field(None, description="The customer's id in another system, if one was given.")


class CustomerPage(Page[CustomerRead]):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": "WyItY3JlYXRlZF9hdCIsIC..."}]}
    )


HISTORY_EXAMPLE = {
    "seq": 4711,
    "id": "5b6c7d8e-9fa0-4b1c-8d2e-3f4a5b6c7d8e",
    "version": 3,
    "changed_at": "2026-11-20T09:15:02.114Z",
    "changed_by": "sales-frontend",
    "via": "update",
    "changes": [
        {"field": "lifecycle_stage", "from": "lead", "to": "customer"},
        {"field": "owner", "from": "kim@yourcompany.example", "to": "lee@yourcompany.example"},
    ],
}

# The fields a customer's history records (crm.customers.models.TRACKED_FIELDS).
HistoryField = Literal[
    "email",
    "external_id",
    "name",
    "phone",
    "company",
    "lifecycle_stage",
    "owner",
    "tags",
    "attributes",
    "source",
    "campaign_id",
    "survey_opt_out",
    "erased_at",
    "merged_into_id",
]


class FieldChange(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    field: str
    from_: Any = Field(alias="from", description="The value before (null after an erasure for personal fields).")
    to: Any = Field(description="The value after (null after an erasure for personal fields).")


class CustomerChangeRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [HISTORY_EXAMPLE]})

    seq: int = Field(description="Grows with every change recorded (of any customer): the order of the changes.")
    id: uuid.UUID = Field(description="The change's id, as its `customer_changed` entry on the customer's timeline has it.")
    version: int = Field(description="The customer's version after this change (its ETag then).")
    changed_at: dt.datetime
    changed_by: str | None = Field(description="The name of the API key that made the change (null: the service itself).")
    via: ChangeVia | None = Field(
        description="What made it: `update` (PATCH), `batch` (POST /v1/customers/batch), `merge` (fields filled from a "
        "duplicate, or this customer merged away), `erasure`, `lead_conversion`, `deal` (the lifecycle stage moved by a "
        "deal), `survey_opt_out` (the customer opted out of surveys from a survey's link, as the CEM service reported: "
        "`survey.opted_out`), `survey_opt_in` (the customer, opted out, asked from a survey's link for surveys again: "
        "`survey.opted_in`); null for the service's own changes."
    )
    changes: list[FieldChange] = Field(description="Each field that changed, in field-name order.")


class CustomerHistoryPage(Page[CustomerChangeRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [HISTORY_EXAMPLE], "next_cursor": None}]})


class CustomerBatchItem(PatchModel):
    """One customer of a batch upsert: found by `external_id` (when sent) or else by `email`;
    the fields sent are set (`tags` and `attributes` replaced whole), the others kept. A new
    customer needs `email` and `name`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"external_id": "shop-1042", "email": "ada@example.com", "name": "Ada Lovelace"}]}
    )

    email: EmailStr | None = Field(None, description="Unique, compared case-insensitively; the key when no external_id.")
    external_id: ExternalId | None = Field(None, description="The key, when sent: the customer's id in another system.")
    name: str | None = Field(None, min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=50)
    company: str | None = Field(None, max_length=200)
    lifecycle_stage: LifecycleStage | None = None
    owner: str | None = Field(None, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=50)
    attributes: FreeJSON | None = None
    source: str | None = Field(None, max_length=100)
    campaign_id: uuid.UUID | None = None
    survey_opt_out: bool | None = Field(None, strict=True)

    not_null = _NOT_NULL

    @model_validator(mode="after")
    def _has_a_key(self) -> CustomerBatchItem:
        if self.email is None and self.external_id is None:
            raise ValueError("send email or external_id (the key the customer is found by)")
        return self


# Each item is validated on its own: a bad one gets a problem in its result, the others go on.
BatchItem = each_item(CustomerBatchItem)


class CustomerBatch(BatchBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"external_id": "shop-1042", "email": "ada@example.com", "name": "Ada Lovelace", "tags": ["vip"]},
                        {"email": "grace@example.com", "lifecycle_stage": "customer"},
                    ]
                }
            ]
        }
    )

    items: list[BatchItem] = Field(min_length=1, max_length=BATCH_MAX)


BatchStatus = Literal["created", "updated", "unchanged", "error"]


class BatchItemResult(BaseModel):
    index: int = Field(description="The item's position in `items`, from 0.")
    status: BatchStatus
    customer: CustomerRead | None = Field(None, description="The customer as it is now (not for an error).")
    changed: list[str] | None = Field(None, description="For `updated`: the fields that changed.")
    problem: BatchItemProblem | None = Field(None, description="For `error`: why nothing was done for this item.")


class CustomerBatchResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {"index": 0, "status": "created", "customer": READ_EXAMPLE, "changed": None, "problem": None},
                        {
                            "index": 1,
                            "status": "error",
                            "customer": None,
                            "changed": None,
                            "problem": {
                                "type": "https://cx.example.org/problems/conflict",
                                "status": 409,
                                "title": "Conflict",
                                "detail": "duplicate of item 0 in this batch (same email)",
                                "errors": [{"loc": ["email"], "msg": "repeated in this batch", "type": "duplicate"}],
                            },
                        },
                    ],
                    "counts": {"created": 1, "updated": 0, "unchanged": 0, "error": 1},
                }
            ]
        }
    )

    results: list[BatchItemResult] = Field(description="One per item, in the order of `items`.")
    counts: dict[str, int]


DuplicateReason = Literal["same_name", "similar_name", "same_phone", "same_company", "same_email_local_part"]


class DuplicateCandidate(BaseModel):
    customer: CustomerRead
    score: float = Field(
        ge=0,
        le=1,
        description="How likely the two are one person, 0-1: 0.75 x the trigram similarity of the names (or of this "
        "customer's name and the other's email local part, when closer), plus 0.25 x what they share: the same phone "
        "number (its last 9 digits) 0.6, the same company 0.3, the same email local part 0.3 (at most 1). So the same "
        "name alone is 0.75, with the same phone 0.9. Candidates under 0.5 are not offered.",
    )
    reasons: list[DuplicateReason] = Field(
        description="What the two share: same_name or similar_name always, then same_phone, same_company, same_email_local_part."
    )


class DuplicateCandidates(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "customer": {
                                **READ_EXAMPLE,
                                "id": "5a1c7e9b-3d2f-4b6a-8e0c-1f3a5b7d9e2c",
                                "email": "ada.lovelace@example.net",
                                "name": "Ada Lovelance",
                            },
                            "score": 0.89,
                            "reasons": ["similar_name", "same_phone"],
                        }
                    ]
                }
            ]
        }
    )

    items: list[DuplicateCandidate] = Field(description="Best first (highest score, then id).")
