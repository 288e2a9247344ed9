"""`GET /dashboard`: the experience scores and the themes of their comments, a selected survey's
results question by question, the feedback's sentiment and the newest negative feedback,
touchpoints against their promises, response rate, suppressions and recovery, as charts with
their tables, for people signed in with an API key."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from cem.analytics.results_schemas import ChoiceResults, RatingResults
from cem.analytics.schemas import MetricReport, RecoveryReport, SeriesPoint, TouchpointReport
from cem.analytics.sentiment_schemas import SentimentReport
from cem.analytics.themes_schemas import ThemeReport
from cem.dashboard.service import METRIC_NAMES, METRIC_RANGES, METRICS, DashboardFilters, build_dashboard
from cem.deps import SettingsDep
from cxkit.dashboard.charts import Bar, Point
from cxkit.dashboard.pages import DashboardUser, dashboard_templates, render_page
from cxkit.fields import NUL_REFUSED, has_nul
from cxkit.http.deps import SessionDep
from cxkit.http.problems import ProblemError

router = APIRouter(include_in_schema=False)
TEMPLATES = dashboard_templates(Path(__file__).parent / "templates")
INTERVALS = ("day", "week", "month")


def bucket_label(start: dt.datetime, interval: str) -> str:
    return start.strftime("%Y-%m") if interval == "month" else start.strftime("%Y-%m-%d")


def series_points(report: MetricReport | SentimentReport) -> list[Point]:
    """The report's series as chart points (the score, or the net sentiment, with its 95%
    interval): one per bucket, in order, as the API lists them."""
    return [
        Point(
            label=bucket_label(p.start, report.interval),
            value=p.score if isinstance(p, SeriesPoint) else p.net_sentiment,
            low=p.ci95.low if p.ci95 else None,
            high=p.ci95.high if p.ci95 else None,
            n=p.n,
        )
        for p in report.series
    ]


def gap_bars(touchpoints: list[TouchpointReport]) -> list[Bar]:
    """Touchpoints with a target: score minus target (negative: the promise is not kept)."""
    return [
        Bar(t.name, t.gap, note=f"{METRIC_NAMES[t.target.metric]} target {t.target.score:g}")
        for t in touchpoints
        if t.target is not None
    ]


def theme_bars(report: ThemeReport) -> list[Bar]:
    """The tested themes: how the answers that mention each score against the other answers with
    a comment (below zero, red: they score worse)."""
    return [Bar(t.theme, t.effect, note=f"{t.n} answers") for t in report.themes if t.effect is not None]


def value_bars(question: RatingResults | ChoiceResults) -> list[Bar]:
    """Each score or option of a question with the share of its answers that gave it, in %."""
    return [Bar(v.value, round(v.share * 100, 2), note=f"{v.count} answers") for v in question.values]


RECOVERY_STEPS = (("detractors", "Detractors"), ("followed_up", "Followed up"), ("answered_again", "Answered again"),
                  ("recovered", "Recovered"))  # fmt: skip
RECOVERY_KNOWN = {*(k for k, _ in RECOVERY_STEPS), "followup_rate", "recovery_rate", "definition", "filters", "by_metric"}


def recovery_extras(report: RecoveryReport) -> dict[str, object]:
    """Figures the recovery report has beyond the counts and rates (the follow-up SLA figures:
    time to first action, time to close, share closed within the SLA), shown as they come; a
    group of figures (a nested object) is shown one figure a line, named by its path. The
    per-period lists and the echoed `interval` are left out."""
    extras: dict[str, object] = {}

    def add(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{prefix} {k}".strip(), v)
        elif not isinstance(value, list):
            extras[prefix] = value

    for key, value in report.model_dump().items():
        if key in RECOVERY_KNOWN or key == "interval":
            continue
        add("" if key == "timing" else key, value)  # the overall timing reads as the figures themselves
    return extras


def parse_filters(params: dict[str, str]) -> tuple[DashboardFilters, list[str]]:
    """The filter form's fields (all optional, empty = all); `to` is a day, included (the
    calendar's last day, 9999-12-31, leaves the period open-ended). Text PostgreSQL cannot
    compare (a NUL) is refused as the API refuses it."""
    errors = []
    survey_id = None
    if raw := params.get("survey_id", "").strip():
        try:
            survey_id = uuid.UUID(raw)
        except ValueError:
            errors.append("The survey is not a valid id: choose one from the list.")
    touchpoint = params.get("touchpoint", "").strip()
    if has_nul(touchpoint):  # as the API's QueryText refuses it: PostgreSQL cannot compare NUL
        errors.append(f"The touchpoint {NUL_REFUSED}.")
    touchpoint = touchpoint[:100] or None
    days: dict[str, dt.date | None] = {}
    for name in ("from", "to"):
        days[name] = None
        if raw := params.get(name, "").strip():
            try:
                days[name] = dt.date.fromisoformat(raw)
            except ValueError:
                errors.append(f"“{name}” is not a date like 2026-11-30.")
    since = dt.datetime.combine(days["from"], dt.time(), dt.UTC) if days["from"] else None
    until = None
    # The calendar's last day, included, runs to its end, past which no time is: no end at all
    # (as the API answers a window with `from` alone), where the next midnight would overflow.
    if days["to"] is not None and days["to"] < dt.date.max:
        until = dt.datetime.combine(days["to"] + dt.timedelta(days=1), dt.time(), dt.UTC)
    if since and until and since >= until:
        errors.append("“From” must be on or before “to”.")
        since = until = None
    interval = params.get("interval", "week")
    if interval not in INTERVALS:
        errors.append("Group by day, week or month.")
        interval = "week"
    if errors:
        return DashboardFilters(interval=interval), errors
    return DashboardFilters(survey_id, touchpoint, since, until, interval), []


@router.get("/dashboard")
async def cem_dashboard(request: Request, session: SessionDep, user: DashboardUser, settings: SettingsDep) -> HTMLResponse:
    filters, errors = parse_filters(dict(request.query_params))
    status = 422 if errors else 200
    try:
        data = await build_dashboard(session, filters, settings.followup_action_types)
    except ProblemError as exc:
        errors.append(str(exc.detail or exc))
        status = exc.status
        data = await build_dashboard(session, DashboardFilters(interval=filters.interval), settings.followup_action_types)
    return render_page(
        request,
        TEMPLATES,
        "cem_dashboard.html",
        status=status,
        user=user,
        data=data,
        errors=errors,
        form=dict(request.query_params),
        metrics=METRICS,
        metric_names=METRIC_NAMES,
        metric_ranges=METRIC_RANGES,
        base_url=str(request.base_url).rstrip("/"),
        series_points=series_points,
        gap_bars=gap_bars,
        theme_bars=theme_bars,
        value_bars=value_bars,
        recovery_steps=RECOVERY_STEPS,
        recovery_extras=recovery_extras,
    )
