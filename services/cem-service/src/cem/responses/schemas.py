"""Response input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from cem.fields import Slug
from cxkit.fields import InputModel, Timestamp, not_both, present

_ABSENT_WITH_TOKEN = {name: {"type": "null"} for name in ("survey_id", "customer_id", "email", "touchpoint")}


# What `check_answers` takes from an API client, for the OpenAPI document (validation stays
# there, where each answer is checked against its question); InputModel adds "no NUL" to the strings.
ANSWER_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]
}


class ResponseCreate(InputModel):
    """An answer from an API client: either for an invitation (`token`) or for a survey directly
    (`survey_id`, with `customer_id`, `email` or neither for an anonymous answer)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "q8Yb3k0n2ZfJx4mQp7Rv1sTu9wXy5AaBcDeFgHiJkLm",
                    "answers": {"nps": 9, "reason": "Fast delivery", "topics": ["Delivery"]},
                },
                {
                    "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
                    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
                    "answers": {"nps": 6, "reason": None},
                    "submitted_at": "2026-11-20T15:04:05Z",
                },
            ],
            # A token, or a survey_id (with customer_id or email, not both): what _one_target checks.
            "oneOf": [
                {**present("token"), "properties": {"token": {"not": {"type": "null"}}, **_ABSENT_WITH_TOKEN}},
                {**present("survey_id"), "properties": {"survey_id": {"not": {"type": "null"}}, "token": {"type": "null"}}},
            ],
            **not_both("customer_id", "email"),
        },
    )

    token: str | None = Field(None, min_length=1, max_length=200, description="The invitation's token.")
    survey_id: uuid.UUID | None = Field(None, description="Answer a survey without an invitation.")
    customer_id: uuid.UUID | None = Field(None, description="With `survey_id`: who answered (a customer the CRM announced).")
    email: EmailStr | None = Field(None, description="With `survey_id`: who answered, by email.")
    touchpoint: Slug | None = Field(
        None, description="With `survey_id`: the touchpoint (key) answered about; default the survey's."
    )
    answers: dict[str, Any] = Field(
        max_length=50,
        description="Question id -> answer: an integer on the scale for a rating, a string for text and single "
        "choice, a list of strings for multi choice; null or left out when skipped.",
        json_schema_extra={"propertyNames": {"type": "string"}, "additionalProperties": ANSWER_SCHEMA},
    )
    submitted_at: Timestamp | None = Field(None, description="When it was answered (imports); default now. Never in the future.")

    @model_validator(mode="after")
    def _one_target(self) -> ResponseCreate:
        if (self.token is None) == (self.survey_id is None):
            raise ValueError("give either token or survey_id")
        if self.token is not None and (self.customer_id or self.email or self.touchpoint):
            raise ValueError("with a token, the invitation says who answered and where: leave customer_id, email, touchpoint out")
        if self.customer_id is not None and self.email is not None:
            raise ValueError("give customer_id or email, not both")
        return self


class AnswerRead(BaseModel):
    question_id: str
    type: str
    text: str = Field(description="The question as it was asked.")
    value: int | str | list[str] | None = Field(description="Null when the question was skipped.")
    scale_min: int | None = None
    scale_max: int | None = None


class ScoreRead(BaseModel):
    metric: str = Field(description="nps, csat or ces.")
    value: int | None = Field(description="Null when the score question was skipped.")
    scale_min: int
    scale_max: int
    category: str | None = Field(description="nps: promoter/passive/detractor; csat, ces: positive/neutral/negative.")


EXAMPLE_READ: dict[str, Any] = {
    "id": "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
    "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
    "invitation_id": "7c9e1a3b-5d7f-4b2a-8c4e-6f8a0b2c4d6e",
    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "email": None,
    "touchpoint": "checkout",
    "source": "web",
    "score": {"metric": "nps", "value": 9, "scale_min": 0, "scale_max": 10, "category": "promoter"},
    "answers": [
        {
            "question_id": "nps",
            "type": "rating",
            "text": "How likely are you to recommend Acme to a friend or colleague?",
            "value": 9,
            "scale_min": 0,
            "scale_max": 10,
        },
        {"question_id": "reason", "type": "text", "text": "What is the main reason for your score?", "value": "Fast delivery"},
    ],
    "submitted_at": "2026-11-23T10:12:00Z",
    "followup_requested": False,
}


class ResponseRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_READ]})

    id: uuid.UUID
    survey_id: uuid.UUID
    invitation_id: uuid.UUID | None
    customer_id: uuid.UUID | None
    email: str | None
    touchpoint: str | None
    source: str = Field(description="web (the respondent page) or api.")
    score: ScoreRead | None = Field(description="The answer to the survey's metric question, if it has one.")
    answers: list[AnswerRead]
    submitted_at: dt.datetime
    followup_requested: bool = Field(description="The answer was a detractor's and a follow-up was asked of the CRM.")
