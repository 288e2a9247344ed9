"""The feedback sentiment report: how the feedback feels, over time, per touchpoint and per channel."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from cem.analytics.schemas import Interval, Interval95
from cem.feedback.repository import FeedbackFilters

DEFINITION = (
    "Net sentiment = % positive - % negative feedback, from -100 to 100, with the interval of a difference of two "
    "shares of one sample (as for NPS). Mean score = mean VADER compound score, from -1 to 1. Labels: positive at "
    "0.05 or more, negative at -0.05 or less, neutral between."
)

EXAMPLE_ALL = {
    "n": 120,
    "counts": {"positive": 61, "neutral": 18, "negative": 41},
    "net_sentiment": 16.6667,
    "ci95": {"low": 0.44, "high": 32.89},
    "mean_score": 0.0912,
    "mean_ci95": {"low": 0.0041, "high": 0.1783},
}
EXAMPLE_SENTIMENT = {
    "definition": DEFINITION,
    "filters": {
        "customer_id": None,
        "touchpoint": None,
        "channel": None,
        "from": "2026-11-01T00:00:00Z",
        "to": "2026-12-01T00:00:00Z",
    },
    "interval": "week",
    **EXAMPLE_ALL,
    "series": [
        {
            "start": "2026-11-02T00:00:00Z",
            "n": 31,
            "counts": {"positive": 14, "neutral": 5, "negative": 12},
            "net_sentiment": 6.4516,
            "ci95": {"low": -25.71, "high": 38.61},
            "mean_score": 0.0233,
            "mean_ci95": {"low": -0.1502, "high": 0.1968},
        }
    ],
    "touchpoint_count": 2,
    "by_touchpoint": [
        {
            "touchpoint": "delivery",
            "n": 70,
            "counts": {"positive": 25, "neutral": 10, "negative": 35},
            "net_sentiment": -14.2857,
            "ci95": {"low": -35.71, "high": 7.14},
            "mean_score": -0.0921,
            "mean_ci95": {"low": -0.2017, "high": 0.0175},
        },
        {
            "touchpoint": None,
            "n": 50,
            "counts": {"positive": 36, "neutral": 8, "negative": 6},
            "net_sentiment": 60.0,
            "ci95": {"low": 40.8, "high": 79.2},
            "mean_score": 0.3758,
            "mean_ci95": {"low": 0.2745, "high": 0.4771},
        },
    ],
    "channel_count": 1,
    "by_channel": [
        {"channel": "chat", **EXAMPLE_ALL}  # every piece came by chat
    ],
}


class SentimentFilters(BaseModel):
    customer_id: uuid.UUID | None
    touchpoint: str | None
    channel: str | None
    from_: dt.datetime | None = Field(alias="from")
    to: dt.datetime | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @classmethod
    def of(cls, filters: FeedbackFilters) -> Self:
        """The filters a report was made with, as it says them."""
        return cls(
            customer_id=filters.customer_id,
            touchpoint=filters.touchpoint,
            channel=filters.channel,
            from_=filters.since,
            to=filters.until,
        )


class SentimentSummary(BaseModel):
    n: int = Field(description="Pieces of feedback counted.")
    counts: dict[str, int] = Field(description="Feedback per sentiment label: positive, neutral, negative (all three).")
    net_sentiment: float | None = Field(description="% positive - % negative, -100 to 100; null without feedback.")
    ci95: Interval95 | None = Field(description="95% interval of `net_sentiment`; null below 2 pieces of feedback.")
    mean_score: float | None = Field(description="Mean compound score, -1 to 1; null without feedback.")
    mean_ci95: Interval95 | None = Field(description="mean ± 1.96 sd/√n, cut at -1 and 1; null below 2 pieces of feedback.")


class SentimentPoint(SentimentSummary):
    start: dt.datetime = Field(description="Start of the bucket (UTC; weeks start on Monday).")


class TouchpointSentiment(SentimentSummary):
    touchpoint: str | None = Field(description="The touchpoint's key; null for feedback about no touchpoint.")


class ChannelSentiment(SentimentSummary):
    channel: str


class SentimentReport(SentimentSummary):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_SENTIMENT]})

    definition: str = Field(description="How the figures are computed.")
    filters: SentimentFilters
    interval: Interval
    series: list[SentimentPoint] = Field(description="One point per `interval` that has feedback, oldest first.")
    touchpoint_count: int = Field(description="Touchpoints with feedback (feedback about none counts as one).")
    by_touchpoint: list[TouchpointSentiment] = Field(
        description="The `limit` touchpoints with the most feedback, most first (then by key, none last)."
    )
    channel_count: int = Field(description="Channels with feedback.")
    by_channel: list[ChannelSentiment] = Field(description="The `limit` channels with the most feedback, most first.")
