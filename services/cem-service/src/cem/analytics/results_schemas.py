"""A survey's results: what its respondents answered to each question, summed up."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TEXTS_SHOWN = 5  # the newest text answers a text question's summary shows

EXAMPLE_RESULTS = {
    "survey_id": "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c",
    "filters": {"touchpoint": None, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
    "responses": 120,
    "questions": [
        {
            "id": "nps",
            "type": "rating",
            "text": "How likely are you to recommend Acme to a friend or colleague?",
            "answered": 118,
            "skipped": 2,
            "scale_min": 0,
            "scale_max": 10,
            "mean": 8.07,
            "values": [
                {"value": "0", "count": 1, "share": 0.0085},
                {"value": "1", "count": 0, "share": 0.0},
                {"value": "10", "count": 44, "share": 0.3729},
            ],
        },
        {
            "id": "liked",
            "type": "multi_choice",
            "text": "What did you like?",
            "answered": 97,
            "skipped": 23,
            "values": [
                {"value": "Price", "count": 31, "share": 0.3196},
                {"value": "Speed", "count": 70, "share": 0.7216},
                {"value": "Staff", "count": 12, "share": 0.1237},
            ],
        },
        {
            "id": "reason",
            "type": "text",
            "text": "What is the main reason for your score?",
            "answered": 64,
            "skipped": 56,
            "latest": [
                {
                    "response_id": "d5e6f7a8-b9c0-4d1e-8f2a-3b4c5d6e7f80",
                    "submitted_at": "2026-11-30T17:02:11Z",
                    "text": "Fast delivery",
                }
            ],
        },
    ],
}


class ResultsFilters(BaseModel):
    touchpoint: str | None
    from_: dt.datetime | None = Field(alias="from")
    to: dt.datetime | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ValueCount(BaseModel):
    value: str = Field(description="The score (as text) or the option.")
    count: int = Field(description="Answers that gave it.")
    share: float = Field(
        description="count / answered: of the answers to the question, the share that gave it (for a multi choice "
        "question the shares add up to more than 1: an answer may pick several options)."
    )


class _QuestionResults(BaseModel):
    id: str
    text: str
    answered: int = Field(description="Responses that answered it.")
    skipped: int = Field(description="Responses that left it out (an erased customer's text answer counts here).")


class RatingResults(_QuestionResults):
    type: Literal["rating"]
    scale_min: int
    scale_max: int
    mean: float | None = Field(description="The mean score of the answers (null when none answered).")
    values: list[ValueCount] = Field(description="Every score of the scale in order, those no answer gave included.")


class ChoiceResults(_QuestionResults):
    type: Literal["single_choice", "multi_choice"]
    values: list[ValueCount] = Field(description="Every option in display order, those no answer picked included.")


class TextAnswer(BaseModel):
    response_id: uuid.UUID
    submitted_at: dt.datetime
    text: str


class TextResults(_QuestionResults):
    type: Literal["text"]
    latest: list[TextAnswer] = Field(
        description=f"The {TEXTS_SHOWN} newest answers; every answer is in `GET /v1/responses/export`."
    )


QuestionResults = Annotated[RatingResults | ChoiceResults | TextResults, Field(discriminator="type")]


class SurveyResults(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_RESULTS]})

    survey_id: uuid.UUID
    filters: ResultsFilters
    responses: int = Field(description="Responses in the window.")
    questions: list[QuestionResults] = Field(description="The survey's questions, in order.")
