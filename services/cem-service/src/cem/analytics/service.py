"""Experience analytics: NPS, CSAT and CES with their series and intervals, and touchpoints
measured against their targets."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics import stats
from cem.analytics.repository import (
    Aggregate,
    AnalyticsRepository,
    Durations,
    JourneyTrafficRepository,
    Recovery,
    RecoveryTimes,
    StageProgress,
)
from cem.analytics.schemas import (
    DurationStats,
    Filters,
    Interval95,
    JourneyReport,
    JourneyStageReport,
    MetricReport,
    MetricSummary,
    RecoveryCounts,
    RecoveryFilters,
    RecoveryPeriod,
    RecoveryReport,
    RecoveryTiming,
    ReminderAnswers,
    ResponseRate,
    Scale,
    SeriesPoint,
    SlaShare,
    SuppressionReport,
    Target,
    TouchpointReport,
)
from cem.fields import check_window
from cem.journeys.repository import JourneyRepository
from cem.report_filters import ReportFilters
from cem.suppressions.repository import OptOutRepository, SuppressionRepository
from cem.surveys.questions import METRIC_SCALES
from cem.surveys.repository import SurveyRepository
from cem.touchpoints.repository import BY_KEY, TouchpointRepository
from cxkit import keyset
from cxkit.db import utcnow
from cxkit.http.pagination import PageParams
from cxkit.http.problems import NotFound, field_problem

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
    return stats.mean_with_ci(agg.total, agg.total_sq, agg.n, METRIC_SCALES[metric])


def interval95(ci: tuple[float, float] | None) -> Interval95 | None:
    return None if ci is None else Interval95(low=round(ci[0], 4), high=round(ci[1], 4))


def _summary(metric: str, agg: Aggregate | None) -> MetricSummary:
    if agg is None:
        return MetricSummary(n=0, score=None, ci95=None)
    score, ci = score_of(metric, agg)
    return MetricSummary(n=agg.n, score=stats.rounded(score), ci95=interval95(ci))


async def check_metric_survey(session: AsyncSession, survey_id: uuid.UUID | None, metric: str) -> None:
    """A `survey_id` filter must name a survey that measures `metric` (404 / 422 otherwise)."""
    if survey_id is None:
        return
    survey = await SurveyRepository(session).get(survey_id)
    if survey is None:
        raise NotFound(f"survey {survey_id} does not exist")
    if survey.metric != metric:
        measures = f"measures {survey.metric}" if survey.metric else "measures no metric"
        raise field_problem(["query", "survey_id"], f"survey {survey.name!r} {measures}, not {metric}")


async def metric_report(session: AsyncSession, metric: str, filters: ReportFilters, *, interval: str) -> MetricReport:
    await check_metric_survey(session, filters.survey_id, metric)
    repo = AnalyticsRepository(session)
    buckets = await repo.score_series(metric, interval, filters)
    per_reminders = await repo.invitation_counts(metric, filters)
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
                ci95=interval95(ci),
                counts=agg.counts,
            )
        )
    score, ci = score_of(metric, total)
    low, high = METRIC_SCALES[metric]
    return MetricReport(
        metric=metric,
        definition=DEFINITIONS[metric],
        scale=Scale(min=low, max=high),
        filters=Filters.of(filters),
        interval=interval,  # type: ignore[arg-type]
        n=total.n,
        skipped=total.skipped,
        score=stats.rounded(score),
        mean=stats.rounded(total.total / total.n if total.n else None),
        ci95=interval95(ci),
        counts=total.counts,
        response_rate=response_rate(per_reminders),
        series=series,
    )


def response_rate(per_reminders: dict[int, tuple[int, int]]) -> ResponseRate:
    """The response rate, and the answers that came after each reminder, from (invitations,
    answered) per number of reminders sent."""
    invitations = sum(n for n, _ in per_reminders.values())
    responded = sum(a for _, a in per_reminders.values())
    most = max(per_reminders, default=0)
    return ResponseRate(
        invitations=invitations,
        responded=responded,
        rate=stats.rounded(responded / invitations if invitations else None),
        answered_before_reminders=per_reminders.get(0, (0, 0))[1],
        answered_after_reminder=[
            ReminderAnswers(
                reminder=k,
                reminded=sum(n for sent, (n, _) in per_reminders.items() if sent >= k),
                answers=per_reminders.get(k, (0, 0))[1],
            )
            for k in range(1, most + 1)
        ],
    )


async def touchpoint_reports(
    session: AsyncSession, page: PageParams, *, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[list[TouchpointReport], str | None]:
    """A page of touchpoints (by key) with their counts and scores: a fixed number of grouped
    queries per page, whatever its size."""
    check_window(since, until)
    touchpoints, next_cursor = keyset.cut(await TouchpointRepository(session).list_page(page=page), BY_KEY, page)
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


RECOVERY_DEFINITION = (
    "Detractor follow-ups raised in the window (NPS 0-6, CSAT 1-2, CES 1-2 answers of known customers); "
    "followed up = the CRM reported the follow-up task done; recovered = the customer's next answer to the same "
    "metric after that was better (NPS 7 or more, CSAT or CES 3 or more)."
)
SUPPRESSION_REASONS = ("opted_out", "erased", "survey_throttle", "fatigue")


def _recovery_counts(r: Recovery) -> RecoveryCounts:
    return RecoveryCounts(
        detractors=r.detractors,
        followed_up=r.followed_up,
        answered_again=r.answered_again,
        recovered=r.recovered,
        followup_rate=stats.rounded(r.followed_up / r.detractors if r.detractors else None),
        recovery_rate=stats.rounded(r.recovered / r.followed_up if r.followed_up else None),
    )


async def _check_survey(session: AsyncSession, survey_id: uuid.UUID | None) -> None:
    if survey_id is not None and await SurveyRepository(session).get(survey_id) is None:
        raise NotFound(f"survey {survey_id} does not exist")


async def recovery_report(
    session: AsyncSession, filters: ReportFilters, *, interval: str, action_types: Sequence[str]
) -> RecoveryReport:
    await _check_survey(session, filters.survey_id)
    repo = AnalyticsRepository(session)
    per_metric = await repo.recovery(filters)
    times = await repo.recovery_times(interval, action_types, utcnow(), filters)
    overall = next((t for t in times if t.start is None), None)
    total = Recovery(0, 0, 0, 0)
    for r in per_metric.values():
        total = Recovery(
            total.detractors + r.detractors,
            total.followed_up + r.followed_up,
            total.answered_again + r.answered_again,
            total.recovered + r.recovered,
        )
    return RecoveryReport(
        definition=RECOVERY_DEFINITION,
        filters=RecoveryFilters.of(filters),
        **_recovery_counts(total).model_dump(),
        by_metric={m: _recovery_counts(r) for m, r in sorted(per_metric.items())},
        interval=interval,  # type: ignore[arg-type]
        timing=_timing(overall),
        periods=[RecoveryPeriod(start=t.start, **_timing(t).model_dump()) for t in times if t.start is not None],
    )


def _durations(d: Durations) -> DurationStats:
    return DurationStats(n=d.n, median_hours=stats.rounded(d.median), p90_hours=stats.rounded(d.p90))


def _timing(t: RecoveryTimes | None) -> RecoveryTiming:
    if t is None:
        empty = DurationStats(n=0, median_hours=None, p90_hours=None)
        return RecoveryTiming(
            followups=0, time_to_first_action=empty, time_to_close=empty, within_sla=SlaShare(due=0, within=0, share=None)
        )
    return RecoveryTiming(
        followups=t.followups,
        time_to_first_action=_durations(t.first_action),
        time_to_close=_durations(t.close),
        within_sla=SlaShare(due=t.due, within=t.within_sla, share=stats.rounded(t.within_sla / t.due if t.due else None)),
    )


async def suppression_report(session: AsyncSession, filters: ReportFilters) -> SuppressionReport:
    await _check_survey(session, filters.survey_id)
    counts = await SuppressionRepository(session).counts_by_reason(filters)
    reasons = {reason: counts.get(reason, 0) for reason in SUPPRESSION_REASONS}
    return SuppressionReport(
        filters=RecoveryFilters.of(filters),
        total=sum(counts.values()),
        reasons=reasons,
        opt_outs=await OptOutRepository(session).count(filters),
    )


async def journey_report(
    session: AsyncSession, journey_id: uuid.UUID, *, since: dt.datetime | None, until: dt.datetime | None
) -> JourneyReport:
    """A journey stage by stage: traffic, how customers move on to the next stage, and the
    scores of the answers about its touchpoints; a fixed number of grouped queries."""
    check_window(since, until)
    journey = await JourneyRepository(session).get(journey_id)
    if journey is None:
        raise NotFound(f"journey {journey_id} does not exist")
    stages = (await JourneyRepository(session).stages_of([journey_id])).get(journey_id, [])
    stage_keys = [[t.key for t in touchpoints] for _, touchpoints in stages]
    traffic = JourneyTrafficRepository(session, stage_keys, since, until)
    progress = await traffic.progress()
    keys = sorted({key for keys in stage_keys for key in keys})
    repo = AnalyticsRepository(session)
    scores = {m: await repo.scores_per_touchpoint(m, keys, since, until) if keys else {} for m in ("nps", "csat", "ces")}

    reports = []
    for i, (stage, _) in enumerate(stages):
        p = progress.get(i, StageProgress())
        last = i == len(stages) - 1
        summaries = {}
        for metric, per_touchpoint in scores.items():
            found = [per_touchpoint[k] for k in stage_keys[i] if k in per_touchpoint]
            total = Aggregate.empty(metric)
            for aggregate in found:
                total.add(aggregate)
            summaries[metric] = _summary(metric, total if found else None)
        reports.append(
            JourneyStageReport(
                name=stage.name,
                touchpoints=stage_keys[i],
                visits=p.visits,
                anonymous_visits=p.anonymous_visits,
                customers=p.customers,
                reached_next=0 if last else p.reached_next,
                conversion_to_next=None if last or not p.customers else stats.rounded(p.reached_next / p.customers),
                median_days_to_next=None if last else stats.rounded(p.median_days_to_next),
                **summaries,
            )
        )
    return JourneyReport(
        journey_id=journey.id,
        name=journey.name,
        filters=Filters(survey_id=None, touchpoint=None, from_=since, to=until),
        customers=await traffic.entered() if keys else 0,
        stages=reports,
    )
