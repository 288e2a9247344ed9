"""Feedback input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, model_validator

from cem.fields import Channel, Slug
from cxkit.fields import InputModel, Integer, NoNul, Timestamp, not_both

SentimentLabel = Literal["positive", "neutral", "negative"]


class FeedbackCreate(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
                    "touchpoint": "delivery",
                    "channel": "chat",
                    "text": "The parcel came a day early and the driver was lovely.",
                    "rating": 5,
                },
                {
                    "email": "ada@example.com",
                    "channel": "app_store",
                    "text": "The app keeps logging me out. Annoying!",
                    "rating": 2,
                    "rating_scale_min": 1,
                    "rating_scale_max": 5,
                    "external_ref": "review-88121",
                    "received_at": "2026-11-22T18:30:00Z",
                },
            ],
            **not_both("customer_id", "email"),
        },
    )

    customer_id: uuid.UUID | None = Field(None, description="A customer the CRM announced; or give `email`, or neither.")
    email: EmailStr | None = Field(None, description="Linked to the customer with this email when known.")
    touchpoint: Slug | None = Field(None, description="The touchpoint (key) the feedback is about.")
    channel: Channel = Field(description="Where it came from: email, chat, phone, app_store, social, store...")
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000), NoNul]
    rating: float | None = Field(
        None, allow_inf_nan=False, strict=True, description="A rating given with the feedback, on its scale."
    )
    rating_scale_min: Integer = Field(1, ge=0, le=100, description="Lowest possible rating.")
    rating_scale_max: Integer = Field(5, ge=1, le=100, description="Highest possible rating.")
    external_ref: Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul] | None = Field(
        None, description="Id in the source system (ticket, review); the same channel and ref twice is a 409."
    )
    received_at: Timestamp | None = Field(None, description="When it was given; default now. Never in the future.")

    @model_validator(mode="after")
    def _consistent(self) -> FeedbackCreate:
        if self.customer_id is not None and self.email is not None:
            raise ValueError("give customer_id or email, not both")
        if self.rating_scale_min >= self.rating_scale_max:
            raise ValueError("rating_scale_max must be greater than rating_scale_min")
        if self.rating is not None and not self.rating_scale_min <= self.rating <= self.rating_scale_max:
            raise ValueError(f"rating must be within {self.rating_scale_min}..{self.rating_scale_max}")
        return self


class SentimentRead(BaseModel):
    label: SentimentLabel
    score: float = Field(description="VADER compound score, -1 (most negative) to 1 (most positive).")


EXAMPLE_READ = {
    "id": "3c5e7a9b-1d3f-4e5a-8b7c-9d1e3f5a7b9c",
    "customer_id": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "email": None,
    "touchpoint": "delivery",
    "channel": "chat",
    "text": "The parcel came a day early and the driver was lovely.",
    "rating": 5.0,
    "rating_scale_min": 1,
    "rating_scale_max": 5,
    "sentiment": {"label": "positive", "score": 0.5859},
    "external_ref": None,
    "received_at": "2026-11-23T09:00:00Z",
    "recorded_at": "2026-11-23T09:00:01Z",
}


class FeedbackRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_READ]})

    id: uuid.UUID
    customer_id: uuid.UUID | None
    email: str | None
    touchpoint: str | None
    channel: str
    text: str | None = Field(description="Null once the customer's personal data was erased.")
    rating: float | None
    rating_scale_min: int | None
    rating_scale_max: int | None
    sentiment: SentimentRead
    external_ref: str | None
    received_at: dt.datetime
    recorded_at: dt.datetime
