"""Experience analytics: NPS, CSAT and CES with their series and intervals, and touchpoints
measured against their targets."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics import stats
from cem.analytics.repository import Aggregate, AnalyticsRepository
from cem.analytics.schemas import (
    Filters,
    Interval95,
    MetricReport,
    MetricSummary,
    ResponseRate,
    Scale,
    SeriesPoint,
    Target,
    TouchpointReport,
)
from cem.fields import check_window, field_problem
from cem.paging import after_text
from cem.surveys.questions import METRIC_SCALES
from cem.surveys.repository import SurveyRepository
from cem.touchpoints.repository import TouchpointRepository
from cxkit.http.pagination import PageParams, encode_cursor
from cxkit.http.problems import NotFound

DEFINITIONS = {
    "nps": "NPS = % promoters (9-10) - % detractors (0-6), from -100 to 100.",
    "csat": "CSAT = % of answers 4-5 on the 1-5 scale (positive), from 0 to 100.",
    "ces": "CES = mean effort score on 1-7, where 1 = very difficult and 7 = very easy (higher is better).",
}


def score_of(metric: str, agg: Aggregate) -> tuple[float | None, tuple[float, float] | None]:
    if metric == "nps":
        return stats.nps(agg.counts["promoter"], agg.counts["passive"], agg.counts["detractor"])
    if metric == "csat":
        return stats.csat(agg.counts["positive"], agg.n)
    return stats.mean_with_ci(agg.total, agg.total_sq, agg.n)


def _interval(ci: tuple[float, float] | None) -> Interval95 | None:
    return None if ci is None else Interval95(low=round(ci[0], 4), high=round(ci[1], 4))


def _summary(metric: str, agg: Aggregate | None) -> MetricSummary:
    if agg is None:
        return MetricSummary(n=0, score=None, ci95=None)
    score, ci = score_of(metric, agg)
    return MetricSummary(n=agg.n, score=stats.rounded(score), ci95=_interval(ci))


async def metric_report(
    session: AsyncSession,
    metric: str,
    *,
    survey_id: uuid.UUID | None,
    touchpoint: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    interval: str,
) -> MetricReport:
    check_window(since, until)
    if survey_id is not None:
        survey = await SurveyRepository(session).get(survey_id)
        if survey is None:
            raise NotFound(f"survey {survey_id} does not exist")
        if survey.metric != metric:
            measures = f"measures {survey.metric}" if survey.metric else "measures no metric"
            raise field_problem(["query", "survey_id"], f"survey {survey.name!r} {measures}, not {metric}")
    repo = AnalyticsRepository(session)
    buckets = await repo.score_series(metric, interval, survey_id=survey_id, touchpoint=touchpoint, since=since, until=until)
    invitations, responded = await repo.invitation_counts(
        metric, survey_id=survey_id, touchpoint=touchpoint, since=since, until=until
    )
    total = Aggregate.empty(metric)
    series = []
    for start, agg in buckets:
        total.add(agg)
        score, ci = score_of(metric, agg)
        series.append(
            SeriesPoint(
                start=start,
                n=agg.n,
                skipped=agg.skipped,
                score=stats.rounded(score),
                mean=stats.rounded(agg.total / agg.n if agg.n else None),
                ci95=_interval(ci),
                counts=agg.counts,
            )
        )
    score, ci = score_of(metric, total)
    low, high = METRIC_SCALES[metric]
    return MetricReport(
        metric=metric,
        definition=DEFINITIONS[metric],
        scale=Scale(min=low, max=high),
        filters=Filters(survey_id=survey_id, touchpoint=touchpoint, from_=since, to=until),
        interval=interval,  # type: ignore[arg-type]
        n=total.n,
        skipped=total.skipped,
        score=stats.rounded(score),
        mean=stats.rounded(total.total / total.n if total.n else None),
        ci95=_interval(ci),
        counts=total.counts,
        response_rate=ResponseRate(
            invitations=invitations,
            responded=responded,
            rate=stats.rounded(responded / invitations if invitations else None),
        ),
        series=series,
    )


async def touchpoint_reports(
    session: AsyncSession, page: PageParams, *, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[list[TouchpointReport], str | None]:
    """A page of touchpoints (by key) with their counts and scores: a fixed number of grouped
    queries per page, whatever its size."""
    check_window(since, until)
    touchpoints = await TouchpointRepository(session).list_page(limit=page.limit, after=after_text(page))
    next_cursor = None
    if len(touchpoints) > page.limit:
        touchpoints = touchpoints[: page.limit]
        next_cursor = encode_cursor([touchpoints[-1].key, str(touchpoints[-1].id)])
    keys = [t.key for t in touchpoints]
    if not keys:
        return [], None
    repo = AnalyticsRepository(session)
    interactions = await repo.interactions_per_touchpoint(keys, since, until)
    invitations = await repo.invitations_per_touchpoint(keys, since, until)
    responses = await repo.responses_per_touchpoint(keys, since, until)
    scores = {m: await repo.scores_per_touchpoint(m, keys, since, until) for m in ("nps", "csat", "ces")}
    reports = []
    for t in touchpoints:
        sent, answered = invitations.get(t.key, (0, 0))
        summaries = {m: _summary(m, scores[m].get(t.key)) for m in scores}
        target = None
        gap = None
        if t.target_metric is not None and t.target_score is not None:
            target = Target(metric=t.target_metric, score=t.target_score)
            actual = summaries[t.target_metric].score
            gap = None if actual is None else round(actual - t.target_score, 4)
        reports.append(
            TouchpointReport(
                touchpoint=t.key,
                name=t.name,
                journey_stage=t.journey_stage,
                channel=t.channel,
                interactions=interactions.get(t.key, 0),
                invitations=sent,
                responses=responses.get(t.key, 0),
                response_rate=stats.rounded(answered / sent if sent else None),
                nps=summaries["nps"],
                csat=summaries["csat"],
                ces=summaries["ces"],
                target=target,
                gap=gap,
            )
        )
    return reports, next_cursor
