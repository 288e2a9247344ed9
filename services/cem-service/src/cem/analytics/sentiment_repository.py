"""Feedback counted per sentiment by the database: per time bucket, per touchpoint and per
channel, in one grouped statement (GROUPING SETS), with the sum and the sum of squares of the
compound scores for their mean."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, select, tuple_

from cem.analytics.repository import bucket_start, day_bucket
from cem.feedback.models import Feedback
from cem.feedback.repository import FeedbackFilters, matching
from cxkit.repository import SessionRepository

LABELS = ("positive", "neutral", "negative")


@dataclass
class SentimentCounts:
    """Feedback per sentiment label, and the compound scores' sum and sum of squares."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    total: float = 0.0
    total_sq: float = 0.0

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def add(self, other: SentimentCounts) -> None:
        for label, count in other.counts.items():
            self.counts[label] += count
        self.total += other.total
        self.total_sq += other.total_sq


@dataclass
class SentimentCounted:
    series: list[tuple[dt.datetime, SentimentCounts]]  # oldest first
    touchpoints: dict[str | None, SentimentCounts]  # None: feedback about no touchpoint
    channels: dict[str, SentimentCounts]


def received_bucket(interval: str) -> ColumnElement[Any]:
    """The UTC day, week or month a piece of feedback was received in, written as the extended
    statistics of migration cem0023 are (`feedback_received_<interval>`), so the planner knows how
    many buckets there are and counts them in a hash table instead of sorting every row."""
    return day_bucket(interval, func.timezone(literal_column("'UTC'"), Feedback.received_at))


class SentimentRepository(SessionRepository):
    async def sentiment_counts(self, filters: FeedbackFilters, interval: str) -> SentimentCounted:
        """The feedback the list shows with `filters` (its `sentiment` is not applied), counted per
        `interval` of `received_at` (UTC), per touchpoint and per channel."""
        bucket = received_bucket(interval)
        # GROUPING(bucket, touchpoint, channel) as a bit mask: 0b011 per bucket, 0b101 per
        # touchpoint, 0b110 per channel.
        grouped_by = func.grouping(bucket, Feedback.touchpoint, Feedback.channel)
        stmt = (
            select(
                grouped_by.label("grouped_by"),
                bucket.label("bucket"),
                Feedback.touchpoint,
                Feedback.channel,
                *(func.count().filter(Feedback.sentiment_label == label).label(label) for label in LABELS),
                func.coalesce(func.sum(Feedback.sentiment_score), 0.0).label("total"),
                func.coalesce(func.sum(Feedback.sentiment_score * Feedback.sentiment_score), 0.0).label("total_sq"),
            )
            .where(*matching(dataclasses.replace(filters, sentiment=None)))
            .group_by(func.grouping_sets(tuple_(bucket), tuple_(Feedback.touchpoint), tuple_(Feedback.channel)))
        )
        out = SentimentCounted(series=[], touchpoints={}, channels={})
        for row in (await self.session.execute(stmt)).all():
            counts = {label: int(row._mapping[label]) for label in LABELS}
            counted = SentimentCounts(counts, float(row.total), float(row.total_sq))
            if row.grouped_by == 0b011:
                out.series.append((bucket_start(row.bucket), counted))
            elif row.grouped_by == 0b101:
                out.touchpoints[row.touchpoint] = counted
            else:
                out.channels[row.channel] = counted
        out.series.sort(key=lambda point: point[0])
        return out
