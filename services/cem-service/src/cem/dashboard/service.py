"""What the CEM dashboard shows, gathered through the same analytics functions the JSON
endpoints (`/v1/analytics/...`) call, so a number on the page is the number the API gives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics import sentiment, themes
from cem.analytics import service as analytics
from cem.analytics.drivers import MIN_N
from cem.analytics.results import survey_results
from cem.analytics.results_schemas import SurveyResults
from cem.analytics.schemas import MetricReport, RecoveryReport, SuppressionReport, TouchpointReport
from cem.analytics.sentiment_schemas import SentimentReport
from cem.analytics.themes_schemas import ThemeReport
from cem.feedback import service as feedback
from cem.feedback.repository import FeedbackFilters
from cem.feedback.schemas import FeedbackRead
from cem.followups import service as followups
from cem.followups.repository import DEFAULT_SORT, FollowupFilters
from cem.followups.schemas import FollowupItem
from cem.report_filters import ReportFilters
from cem.surveys.models import Survey
from cem.surveys.repository import SurveyRepository
from cxkit.http.pagination import PageParams, decode_cursor

METRICS = ("nps", "csat", "ces")
METRIC_NAMES = {"nps": "NPS", "csat": "CSAT", "ces": "CES"}
# The y axis of each metric's chart: its whole range, so charts compare by eye.
METRIC_RANGES = {"nps": (-100.0, 100.0), "csat": (0.0, 100.0), "ces": (1.0, 7.0)}
SURVEY_CHOICES = 200
THEMES = 10  # per metric: the most mentioned words of the comments
TOUCHPOINT_PAGES = 5  # x 200 touchpoints: beyond that the page would be unreadable anyway
NEGATIVE_FEEDBACK = 10  # the newest negative feedback shown
SENTIMENT_CHANNELS = 10  # the channels with the most feedback
OVERDUE_FOLLOWUPS = 10  # the newest open follow-ups past their due time


@dataclass(frozen=True, slots=True)
class DashboardFilters(ReportFilters):
    """The reports' filters, and the bucket size of the charts."""

    interval: str = "week"


@dataclass
class CemDashboard:
    filters: DashboardFilters
    surveys: list[Survey]
    survey: Survey | None
    reports: dict[str, MetricReport | None]
    themes: dict[str, ThemeReport | None]
    results: SurveyResults | None  # the selected survey's, question by question
    sentiment: SentimentReport  # the feedback's, at the touchpoint and in the window (feedback has no survey)
    negative_feedback: list[FeedbackRead]  # the newest, at the touchpoint and in the window
    touchpoints: list[TouchpointReport]
    recovery: RecoveryReport
    overdue_followups: list[FollowupItem]  # the newest open ones past due, with the report filters
    suppressions: SuppressionReport
    notes: list[str] = field(default_factory=list)
    negative_feedback_limit: ClassVar[int] = NEGATIVE_FEEDBACK
    overdue_followups_limit: ClassVar[int] = OVERDUE_FOLLOWUPS

    @property
    def empty(self) -> bool:
        """No survey at all yet: the page explains how to make one."""
        return not self.surveys


async def touchpoints_all(session: AsyncSession, since: dt.datetime | None, until: dt.datetime | None) -> list[TouchpointReport]:
    """Every touchpoint's report, page by page as `/v1/analytics/touchpoints` gives them."""
    rows: list[TouchpointReport] = []
    cursor: list[object] | None = None
    for _ in range(TOUCHPOINT_PAGES):
        page, next_cursor = await analytics.touchpoint_reports(
            session, PageParams(limit=200, cursor=cursor), since=since, until=until
        )
        rows.extend(page)
        if next_cursor is None:
            break
        cursor = decode_cursor(next_cursor)
    return rows


def feedback_filters(filters: ReportFilters, label: str | None = None) -> FeedbackFilters:
    """The report filters that apply to feedback, the touchpoint and the window (feedback is
    given to no survey), and the sentiment `label` wanted if any."""
    return FeedbackFilters(touchpoint=filters.touchpoint, sentiment=label, since=filters.since, until=filters.until)


async def newest_negative_feedback(session: AsyncSession, filters: ReportFilters) -> list[FeedbackRead]:
    """The newest negative feedback at the filters' touchpoint and in their window, as
    `GET /v1/feedback?sentiment=negative` lists it (feedback is not given to a survey)."""
    wanted = feedback_filters(filters, "negative")
    rows, _ = await feedback.list_feedback(session, PageParams(limit=NEGATIVE_FEEDBACK, cursor=None), wanted)
    return [feedback.to_read(row) for row in rows]


async def newest_overdue_followups(session: AsyncSession, filters: ReportFilters) -> list[FollowupItem]:
    """The newest open follow-ups past their due time, of the filters' survey and touchpoint,
    opened in their window, as `GET /v1/followups?overdue=true` lists them."""
    wanted = FollowupFilters(
        overdue=True, survey_id=filters.survey_id, touchpoint=filters.touchpoint, since=filters.since, until=filters.until
    )
    items, _ = await followups.list_followups(session, wanted, DEFAULT_SORT, PageParams(limit=OVERDUE_FOLLOWUPS, cursor=None))
    return items


async def build_dashboard(session: AsyncSession, filters: DashboardFilters, action_types: Sequence[str]) -> CemDashboard:
    """Raises the analytics problems (unknown survey 404, window 422) for the page to show."""
    surveys = await SurveyRepository(session).list_page(
        page=PageParams(limit=SURVEY_CHOICES, cursor=None), status=None, kind=None, touchpoint=None
    )
    survey = None
    notes = []
    wanted: tuple[str, ...] = METRICS
    if filters.survey_id is not None:
        survey = await SurveyRepository(session).get(filters.survey_id)
        if survey is not None:
            wanted = (survey.metric,) if survey.metric in METRICS else ()
            notes.append(
                f"Survey “{survey.name}” measures {METRIC_NAMES[survey.metric]}: the other scores are hidden while it is "
                "selected."
                if survey.metric in METRICS
                else f"Survey “{survey.name}” has no NPS, CSAT or CES question: no score to chart."
            )
    reports: dict[str, MetricReport | None] = {m: None for m in METRICS}
    comment_themes: dict[str, ThemeReport | None] = {m: None for m in METRICS}
    for metric in wanted:
        reports[metric] = await analytics.metric_report(session, metric, filters, interval=filters.interval)
        comment_themes[metric] = await themes.theme_report(session, metric, filters, limit=THEMES, min_n=MIN_N)
    results = await survey_results(session, filters) if survey is not None else None
    return CemDashboard(
        filters=filters,
        surveys=surveys,
        survey=survey,
        reports=reports,
        themes=comment_themes,
        results=results,
        sentiment=await sentiment.sentiment_report(
            session, feedback_filters(filters), interval=filters.interval, limit=SENTIMENT_CHANNELS
        ),
        negative_feedback=await newest_negative_feedback(session, filters),
        touchpoints=await touchpoints_all(session, filters.since, filters.until),
        recovery=await analytics.recovery_report(session, filters, interval=filters.interval, action_types=action_types),
        overdue_followups=await newest_overdue_followups(session, filters),
        suppressions=await analytics.suppression_report(session, filters),
        notes=notes,
    )
