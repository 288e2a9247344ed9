"""Analytics queries: every number is aggregated by the database (GROUP BY per time bucket or
touchpoint); Python only sees one row per bucket."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from cem.followups.models import Followup
from cem.invitations.models import Invitation
from cem.report_filters import ReportFilters
from cem.responses.models import AnswerDay, Score, ScoreDay, SurveyResponse
from cem.surveys.models import Survey
from cem.touchpoints.models import TouchpointInteraction
from cxkit.db import window_conditions
from cxkit.repository import SessionRepository

_HOUR = 3600.0

CATEGORIES: dict[str, tuple[str, ...]] = {
    "nps": ("promoter", "passive", "detractor"),
    "csat": ("positive", "neutral", "negative"),
    "ces": ("positive", "neutral", "negative"),
}
INTERVALS = ("day", "week", "month")


def day_bucket(interval: str, day: Any) -> ColumnElement[Any]:
    """The start of the day / ISO week (Monday) / month holding the date `day`."""
    if interval not in INTERVALS:
        raise ValueError(interval)
    # A timestamp without time zone, so the session's TimeZone plays no part; the unit is a
    # literal so the SELECT and GROUP BY expressions are identical.
    return func.date_trunc(literal_column(f"'{interval}'"), cast(day, DateTime()))


def bucket_start(value: dt.datetime) -> dt.datetime:
    """A bucket as the database returned it (a timestamp without time zone) as an aware UTC time."""
    return value.replace(tzinfo=dt.UTC)


@dataclass
class Recovery:
    """Counts of one metric's detractor follow-ups."""

    detractors: int
    followed_up: int
    answered_again: int
    recovered: int


@dataclass
class Durations:
    """Hours from raising follow-ups to an event of theirs: how many had it, median, 90th percentile."""

    n: int
    median: float | None
    p90: float | None


@dataclass
class RecoveryTimes:
    """One period's (or the whole window's: `start` None) follow-up timings."""

    start: dt.datetime | None
    followups: int
    first_action: Durations
    close: Durations
    due: int
    within_sla: int


@dataclass
class Aggregate:
    """What the database hands back for one group of scores."""

    n: int
    skipped: int
    counts: dict[str, int]
    total: int
    total_sq: int

    @classmethod
    def empty(cls, metric: str) -> Aggregate:
        return cls(0, 0, dict.fromkeys(CATEGORIES[metric], 0), 0, 0)

    def add(self, other: Aggregate) -> None:
        self.n += other.n
        self.skipped += other.skipped
        self.total += other.total
        self.total_sq += other.total_sq
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v


def _score_columns(metric: str, source: Any) -> list[Any]:
    """Aggregates over `source`, a per-(group, category) pre-aggregation with cnt, total, total_sq."""
    return [
        func.coalesce(func.sum(source.c.cnt).filter(source.c.category.is_not(None)), 0).label("n"),
        func.coalesce(func.sum(source.c.cnt).filter(source.c.category.is_(None)), 0).label("skipped"),
        *[func.coalesce(func.sum(source.c.cnt).filter(source.c.category == c), 0).label(f"c_{c}") for c in CATEGORIES[metric]],
        func.coalesce(func.sum(source.c.total), 0).label("total"),
        func.coalesce(func.sum(source.c.total_sq), 0).label("total_sq"),
    ]


def _per_category_rows(group: Any, metric: str, conditions: list[Any]) -> Any:
    """Scores grouped by `group` and category (grp, category, cnt, total, total_sq): the one pass
    over the rows. Everything else folds these few rows."""
    score = cast(Score.score, Integer)
    return (
        select(
            group.label("grp"),
            Score.category.label("category"),
            func.count().label("cnt"),
            func.sum(score).label("total"),
            func.sum(score * score).label("total_sq"),
        )
        .where(Score.metric == metric, *conditions)
        .group_by(group, Score.category)
    )


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def whole_days(
    since: dt.datetime | None, until: dt.datetime | None
) -> tuple[tuple[dt.date | None, dt.date | None] | None, list[tuple[dt.datetime | None, dt.datetime | None]]]:
    """The window [since, until) as the UTC days it holds whole, (first, end) with `end`
    excluded and None for an open end, or None if it holds no whole day; and the windows
    left over (parts of days at its ends, or the whole window when it holds no whole day)."""
    first = end = None
    if since is not None:
        first = since.astimezone(dt.UTC).date()
        if _midnight(first) < since:
            if first == dt.date.max:  # the calendar's last day, begun: no midnight follows
                return None, [(since, until)]
            first += dt.timedelta(days=1)
    if until is not None:
        end = until.astimezone(dt.UTC).date()
    if first is not None and end is not None and first >= end:
        return None, [(since, until)]
    parts: list[tuple[dt.datetime | None, dt.datetime | None]] = []
    if first is not None and _midnight(first) != since:
        parts.append((since, _midnight(first)))
    if end is not None and _midnight(end) != until:
        parts.append((_midnight(end), until))
    return (first, end), parts


def _daily_scores(metric: str, filters: ReportFilters, *, touchpoints: Sequence[str] | None = None) -> Any:
    """Per UTC day and category (grp, category, cnt, total, total_sq) of the scores in the
    window: whole days from `score_days`, the parts of days the window cuts from `scores`. With
    `touchpoints`, per touchpoint (of those) and category instead, read the same way."""
    by_day = touchpoints is None
    since, until = filters.since, filters.until
    days, parts = whole_days(since, until)
    if filters.touchpoint == "":  # no touchpoint has an empty key; '' stands for none in score_days
        days, parts = None, [(since, until)]
    selects = []
    if days is not None:
        first, end = days
        kept = [
            ScoreDay.metric == metric,
            *filters.unwindowed().where(survey=ScoreDay.survey_id, touchpoint=ScoreDay.touchpoint, at=ScoreDay.day),
            *window_conditions(ScoreDay.day, first, end),
        ]
        if touchpoints is not None:
            kept.append(ScoreDay.touchpoint.in_(touchpoints))
        group = ScoreDay.day if by_day else ScoreDay.touchpoint
        selects.append(
            select(
                group.label("grp"),
                func.nullif(ScoreDay.category, "").label("category"),
                cast(func.sum(ScoreDay.answers), BigInteger).label("cnt"),
                cast(func.sum(ScoreDay.score_sum), BigInteger).label("total"),
                cast(func.sum(ScoreDay.score_squares), BigInteger).label("total_sq"),
            )
            .where(*kept)
            .group_by(group, ScoreDay.category)
            # Stripes that add up to nothing (a delete counted out of another one) are no answers.
            .having(func.sum(ScoreDay.answers) != 0)
        )
    if parts:
        conditions = score_conditions(filters.unwindowed())
        windows = [window_conditions(Score.submitted_at, start, stop) for start, stop in parts]
        if all(windows):  # else one of them is the whole time line
            conditions.append(or_(*(and_(*w) for w in windows)))
        if touchpoints is not None:
            conditions.append(Score.touchpoint.in_(touchpoints))
        selects.append(_per_category_rows(Score.submitted_on if by_day else Score.touchpoint, metric, conditions))
    return (union_all(*selects) if len(selects) > 1 else selects[0]).subquery("per_category")


def score_conditions(filters: ReportFilters) -> list[Any]:
    """The filters on the `scores` table: survey, touchpoint and a window on the answer time."""
    return filters.where(survey=Score.survey_id, touchpoint=Score.touchpoint, at=Score.submitted_at)


def _aggregate(metric: str, row: Any) -> Aggregate:
    return Aggregate(
        n=int(row.n),
        skipped=int(row.skipped),
        counts={c: int(getattr(row, f"c_{c}")) for c in CATEGORIES[metric]},
        total=int(row.total),
        total_sq=int(row.total_sq),
    )


class AnalyticsRepository(SessionRepository):
    async def score_series(self, metric: str, interval: str, filters: ReportFilters) -> list[tuple[dt.datetime, Aggregate]]:
        """One aggregate per time bucket, oldest first."""
        daily = _daily_scores(metric, filters)
        bucket = day_bucket(interval, daily.c.grp).label("bucket")
        stmt = select(bucket, *_score_columns(metric, daily)).group_by(bucket).order_by(bucket)
        rows = (await self.session.execute(stmt)).all()
        return [(bucket_start(row.bucket), _aggregate(metric, row)) for row in rows]

    async def scored_answers(self, metric: str, filters: ReportFilters) -> int:
        """How many answers gave `metric` a score in the filters' window (from the rollups)."""
        daily = _daily_scores(metric, filters)
        stmt = select(func.coalesce(func.sum(daily.c.cnt).filter(daily.c.category.is_not(None)), 0))
        return int(await self.session.scalar(stmt) or 0)

    async def invitation_counts(self, metric: str, filters: ReportFilters) -> dict[int, tuple[int, int]]:
        """Per number of reminders sent: (invitations made in the window to surveys measuring
        `metric`, how many of them were answered). Reminders stop at the answer, so an answered
        invitation reminded k times was answered after its k-th reminder."""
        stmt = (
            select(Invitation.reminders_sent, func.count(), func.count(Invitation.answered_at))
            .select_from(Invitation)
            .join(Survey, Survey.id == Invitation.survey_id)
            .where(Survey.metric == metric, Invitation.sent_at.is_not(None), Invitation.cancelled_at.is_(None))
            .where(*filters.where(survey=Invitation.survey_id, touchpoint=Invitation.touchpoint, at=Invitation.created_at))
            .group_by(Invitation.reminders_sent)
        )
        return {int(k): (int(n), int(a)) for k, n, a in (await self.session.execute(stmt)).all()}

    async def interactions_per_touchpoint(
        self, keys: Sequence[str], since: dt.datetime | None, until: dt.datetime | None
    ) -> dict[str, int]:
        stmt = (
            select(TouchpointInteraction.touchpoint, func.count())
            .where(TouchpointInteraction.touchpoint.in_(keys))
            .group_by(TouchpointInteraction.touchpoint)
        )
        if since is not None:
            stmt = stmt.where(TouchpointInteraction.occurred_at >= since)
        if until is not None:
            stmt = stmt.where(TouchpointInteraction.occurred_at < until)
        return {k: int(c) for k, c in (await self.session.execute(stmt)).all()}

    async def invitations_per_touchpoint(
        self, keys: Sequence[str], since: dt.datetime | None, until: dt.datetime | None
    ) -> dict[str, tuple[int, int]]:
        stmt = (
            select(Invitation.touchpoint, func.count(), func.count(Invitation.answered_at))
            .where(Invitation.touchpoint.in_(keys), Invitation.sent_at.is_not(None), Invitation.cancelled_at.is_(None))
            .group_by(Invitation.touchpoint)
        )
        if since is not None:
            stmt = stmt.where(Invitation.created_at >= since)
        if until is not None:
            stmt = stmt.where(Invitation.created_at < until)
        return {k: (int(c), int(a)) for k, c, a in (await self.session.execute(stmt)).all()}

    async def responses_per_touchpoint(
        self, keys: Sequence[str], since: dt.datetime | None, until: dt.datetime | None
    ) -> dict[str, int]:
        """Per touchpoint of `keys`, its responses in the window: whole days from `answer_days`
        (its `response` rows), the parts of days the window cuts from `responses`."""
        days, parts = whole_days(since, until)
        selects: list[Any] = []
        if days is not None:
            first, end = days
            selects.append(
                select(AnswerDay.touchpoint.label("grp"), func.sum(AnswerDay.answers).label("n"))
                .where(
                    AnswerDay.kind == "response", AnswerDay.touchpoint.in_(keys), *window_conditions(AnswerDay.day, first, end)
                )
                .group_by(AnswerDay.touchpoint)
            )
        selects += [
            select(SurveyResponse.touchpoint.label("grp"), func.count().label("n"))
            .where(SurveyResponse.touchpoint.in_(keys), *window_conditions(SurveyResponse.submitted_at, start, stop))
            .group_by(SurveyResponse.touchpoint)
            for start, stop in parts
        ]
        counted = union_all(*selects).subquery("counted") if len(selects) > 1 else selects[0].subquery("counted")
        stmt = select(counted.c.grp, func.sum(counted.c.n)).group_by(counted.c.grp)
        return {k: int(c) for k, c in (await self.session.execute(stmt)).all() if c}

    async def scores_per_touchpoint(
        self, metric: str, keys: Sequence[str], since: dt.datetime | None, until: dt.datetime | None
    ) -> dict[str, Aggregate]:
        """Per touchpoint of `keys`, its scores in the window: whole days from `score_days`, as
        the series read them, so the report folds a few rows per touchpoint and day."""
        per = _daily_scores(metric, ReportFilters(since=since, until=until), touchpoints=keys)
        stmt = select(per.c.grp, *_score_columns(metric, per)).group_by(per.c.grp)
        return {row.grp: _aggregate(metric, row) for row in (await self.session.execute(stmt)).all()}

    async def recovery(self, filters: ReportFilters) -> dict[str, Recovery]:
        """Per metric: follow-ups raised for detractor answers (in the window, by when they were
        raised), how many were followed up (closed by the CRM), how many of those customers
        answered the same metric again after the follow-up was closed, and how many of those
        next answers were better (not a detractor / negative any more). One grouped query; the
        next answer is an indexed lookup per follow-up (scores by customer, metric, time)."""
        next_category = (
            select(Score.category)
            .where(
                Score.customer_id == Followup.customer_id,
                Score.metric == Followup.metric,
                Score.score.is_not(None),
                Score.submitted_at > Followup.closed_at,
            )
            .order_by(Score.submitted_at, Score.response_id)
            .limit(1)
            .scalar_subquery()
        )
        conditions = filters.where(survey=Followup.survey_id, touchpoint=Followup.touchpoint, at=Followup.created_at)
        per_followup = (
            select(
                Followup.metric.label("metric"),
                Followup.closed_at.label("closed_at"),
                case((Followup.closed_at.is_(None), None), else_=next_category).label("next_category"),
            )
            .where(*conditions)
            .subquery("per_followup")
        )
        better = per_followup.c.next_category.not_in(("detractor", "negative"))
        stmt = select(
            per_followup.c.metric,
            func.count(),
            func.count(per_followup.c.closed_at),
            func.count(per_followup.c.next_category),
            func.coalesce(func.sum(case((better, 1), else_=0)), 0),
        ).group_by(per_followup.c.metric)
        return {
            metric: Recovery(int(raised), int(closed), int(again), int(recovered))
            for metric, raised, closed, again, recovered in (await self.session.execute(stmt)).all()
        }

    async def recovery_times(
        self,
        interval: str,
        action_types: Sequence[str],
        now: dt.datetime,
        filters: ReportFilters,
    ) -> list[RecoveryTimes]:
        """Per period of raising (and for the whole window, `start` None, first): follow-ups
        raised; hours to the first action (the first interaction of `action_types` with the
        customer from when it was raised, or its closing if that came first) and to the close,
        each as median and p90 (`percentile_cont`); how many have a due time that has passed or
        were closed (`due`), and how many of those were closed by it. One grouped query (ROLLUP
        gives the total); the first action is an indexed lookup per follow-up."""
        conditions = filters.where(survey=Followup.survey_id, touchpoint=Followup.touchpoint, at=Followup.created_at)
        first_contact = (
            select(func.min(TouchpointInteraction.occurred_at))
            .where(
                TouchpointInteraction.customer_id == Followup.customer_id,
                TouchpointInteraction.occurred_at >= Followup.created_at,
                TouchpointInteraction.type.in_(list(action_types)),
            )
            .scalar_subquery()
        )
        first_action = func.least(first_contact, Followup.closed_at)  # least() skips nulls
        # A cancelled follow-up (its customer erased while it was open) settles no SLA: nobody was to act.
        settled = (
            Followup.due_at.is_not(None)
            & (Followup.status != "cancelled")
            & (Followup.closed_at.is_not(None) | (Followup.due_at <= now))
        )
        per_followup = (
            select(
                day_bucket(interval, func.timezone("UTC", Followup.created_at)).label("bucket"),
                (func.extract("epoch", first_action - Followup.created_at) / _HOUR).label("first_action_h"),
                (func.extract("epoch", Followup.closed_at - Followup.created_at) / _HOUR).label("close_h"),
                settled.label("settled"),
                (Followup.closed_at <= Followup.due_at).label("within"),
            )
            .where(*conditions)
            .subquery("per_followup")
        )
        c = per_followup.c

        def durations(column: Any) -> list[Any]:
            return [
                func.count(column),
                func.percentile_cont(0.5).within_group(column),
                func.percentile_cont(0.9).within_group(column),
            ]

        stmt = (
            select(
                c.bucket,
                func.grouping(c.bucket).label("total"),
                func.count(),
                *durations(c.first_action_h),
                *durations(c.close_h),
                func.count().filter(c.settled),
                func.count().filter(c.settled & c.within),
            )
            .group_by(func.rollup(c.bucket))
            .order_by(func.grouping(c.bucket).desc(), c.bucket)
        )
        out = []
        for row in (await self.session.execute(stmt)).all():
            bucket, total, raised, fa_n, fa_med, fa_p90, cl_n, cl_med, cl_p90, due, within = row
            out.append(
                RecoveryTimes(
                    start=None if total else bucket_start(bucket),
                    followups=int(raised),
                    first_action=Durations(int(fa_n), _float(fa_med), _float(fa_p90)),
                    close=Durations(int(cl_n), _float(cl_med), _float(cl_p90)),
                    due=int(due),
                    within_sla=int(within),
                )
            )
        return out


@dataclass(frozen=True, slots=True)
class StageProgress:
    """One journey stage's traffic in a window: visits of its touchpoints (and how many of them
    anonymous), the known customers who visited it, how many of those visited the next stage at
    or after their first visit of this one, and the median days from their first visit here to
    their first visit there (over those whose first visit there came later)."""

    visits: int = 0
    anonymous_visits: int = 0
    customers: int = 0
    reached_next: int = 0
    median_days_to_next: float | None = None


# The journey's (stage index, touchpoint key) pairs (a touchpoint is in one stage of a journey at most).
_STEPS = "unnest(CAST(:stages AS integer[]), CAST(:keys AS text[])) AS s(stage, key)"
_VISITS = f"""
SELECT s.stage, count(*) AS visits, count(*) FILTER (WHERE ti.customer_id IS NULL) AS anonymous
  FROM touchpoint_interactions ti JOIN {_STEPS} ON ti.touchpoint = s.key
 WHERE {{window}}
 GROUP BY s.stage
"""
_PROGRESS = f"""
WITH firsts AS (
    SELECT s.stage, ti.customer_id, min(ti.occurred_at) AS first_at, max(ti.occurred_at) AS last_at
      FROM touchpoint_interactions ti JOIN {_STEPS} ON ti.touchpoint = s.key
     WHERE ti.customer_id IS NOT NULL AND {{window}}
     GROUP BY s.stage, ti.customer_id
)
SELECT f.stage, count(*) AS customers,
       count(*) FILTER (WHERE n.last_at >= f.first_at) AS reached_next,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM n.first_at - f.first_at) / 86400.0)
           FILTER (WHERE n.first_at >= f.first_at) AS median_days
  FROM firsts f LEFT JOIN firsts n ON n.customer_id = f.customer_id AND n.stage = f.stage + 1
 GROUP BY f.stage
"""
_ENTERED = f"""
SELECT count(DISTINCT ti.customer_id)
  FROM touchpoint_interactions ti JOIN {_STEPS} ON ti.touchpoint = s.key
 WHERE ti.customer_id IS NOT NULL AND {{window}}
"""


class JourneyTrafficRepository(SessionRepository):
    """A journey's traffic: its stages given as lists of touchpoint keys, in order."""

    def __init__(
        self, session: AsyncSession, stage_keys: Sequence[Sequence[str]], since: dt.datetime | None, until: dt.datetime | None
    ) -> None:
        super().__init__(session)
        pairs = [(i, key) for i, keys in enumerate(stage_keys) for key in keys]
        conditions = ["ti.occurred_at >= :since" if since else "", "ti.occurred_at < :until" if until else ""]
        self._window = " AND ".join(c for c in conditions if c) or "true"
        self._params: dict[str, Any] = {"stages": [i for i, _ in pairs], "keys": [k for _, k in pairs]}
        self._params |= {k: v for k, v in (("since", since), ("until", until)) if v is not None}

    async def _rows(self, sql: str) -> list[Any]:
        return list(await self.session.execute(text(sql.format(window=self._window)), self._params))

    async def progress(self) -> dict[int, StageProgress]:
        """Stage index -> its traffic (stages nobody visited are left out)."""
        visits = {stage: (int(n), int(anonymous)) for stage, n, anonymous in await self._rows(_VISITS)}
        progress = {int(row.stage): row for row in await self._rows(_PROGRESS)}
        return {
            stage: StageProgress(
                visits=visits.get(stage, (0, 0))[0],
                anonymous_visits=visits.get(stage, (0, 0))[1],
                customers=int(progress[stage].customers) if stage in progress else 0,
                reached_next=int(progress[stage].reached_next) if stage in progress else 0,
                median_days_to_next=_float(progress[stage].median_days) if stage in progress else None,
            )
            for stage in visits.keys() | progress.keys()
        }

    async def entered(self) -> int:
        """Known customers who visited any stage."""
        return int((await self._rows(_ENTERED))[0][0])


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
