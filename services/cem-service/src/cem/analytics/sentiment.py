"""How the feedback feels (`GET /v1/analytics/sentiment`): the sentiment labels and compound
scores the feedback got when it was recorded (`cem.feedback.sentiment`), counted by the database
over time, per touchpoint and per channel, with the net sentiment and the mean score and their
95% intervals."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics import stats
from cem.analytics.sentiment_repository import SentimentCounts, SentimentRepository
from cem.analytics.sentiment_schemas import (
    DEFINITION,
    ChannelSentiment,
    SentimentFilters,
    SentimentPoint,
    SentimentReport,
    TouchpointSentiment,
)
from cem.analytics.service import interval95
from cem.feedback.repository import FeedbackFilters

SCORE_RANGE = (-1.0, 1.0)  # VADER's compound score


def figures(counted: SentimentCounts) -> dict[str, object]:
    """The summary fields of a report, a point or a group from its counts."""
    # The same difference of two shares of one multinomial sample as the NPS, and its interval.
    net, net_ci = stats.nps(counted.counts["positive"], counted.counts["neutral"], counted.counts["negative"])
    mean, mean_ci = stats.mean_with_ci(counted.total, counted.total_sq, counted.n, SCORE_RANGE)
    return {
        "n": counted.n,
        "counts": dict(counted.counts),
        "net_sentiment": stats.rounded(net),
        "ci95": interval95(net_ci),
        "mean_score": stats.rounded(mean),
        "mean_ci95": interval95(mean_ci),
    }


def _most_first(key: str | None, counted: SentimentCounts) -> tuple[int, bool, str]:
    return -counted.n, key is None, key or ""


async def sentiment_report(session: AsyncSession, filters: FeedbackFilters, *, interval: str, limit: int) -> SentimentReport:
    counted = await SentimentRepository(session).sentiment_counts(filters, interval)
    total = SentimentCounts()
    for _, point in counted.series:
        total.add(point)
    touchpoints = sorted(counted.touchpoints.items(), key=lambda item: _most_first(*item))
    channels = sorted(counted.channels.items(), key=lambda item: _most_first(*item))
    return SentimentReport(
        definition=DEFINITION,
        filters=SentimentFilters.of(filters),
        interval=interval,  # type: ignore[arg-type]
        **figures(total),  # type: ignore[arg-type]
        series=[SentimentPoint(start=start, **figures(point)) for start, point in counted.series],  # type: ignore[arg-type]
        touchpoint_count=len(touchpoints),
        by_touchpoint=[TouchpointSentiment(touchpoint=key, **figures(c)) for key, c in touchpoints[:limit]],  # type: ignore[arg-type]
        channel_count=len(channels),
        by_channel=[ChannelSentiment(channel=key, **figures(c)) for key, c in channels[:limit]],  # type: ignore[arg-type]
    )
