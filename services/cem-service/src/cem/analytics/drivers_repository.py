"""The key-driver query: one statement hands back, per factor level, the sufficient statistics
(answers, sum, sum of squares of the per-answer value) of the answers that have the level, plus
one row for all answers; the level's complement is all minus the level, so Python only sees a
row per level, whatever the number of answers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Interval, String, case, cast, func, literal, select, text, union_all

from cem.analytics.repository import score_conditions
from cem.customers.models import CustomerProfile
from cem.report_filters import ReportFilters
from cem.responses.models import Score
from cem.touchpoints.models import Touchpoint, TouchpointInteraction
from cxkit.repository import SessionRepository

# Bands of the customer's open deal value (the CRM's sum of open deals, in its currency).
DEAL_BANDS: tuple[tuple[str, int | None], ...] = (
    ("none", 0),
    ("under_1k", 1_000),
    ("1k_10k", 10_000),
    ("10k_100k", 100_000),
    ("100k_plus", None),
)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a group of per-answer values: count, sum, sum of squares (exact integers)."""

    n: int
    total: int
    total_sq: int

    def __sub__(self, other: Moments) -> Moments:
        return Moments(self.n - other.n, self.total - other.total, self.total_sq - other.total_sq)


@dataclass(frozen=True)
class DriverStats:
    everyone: Moments
    anonymous: int
    levels: dict[tuple[str, str], Moments]


def answer_value(metric: str) -> ColumnElement[Any]:
    """What one answer contributes, so that the mean over answers is the metric: NPS +100 / 0 / -100,
    CSAT 100 for a positive answer and 0 otherwise, CES the score itself."""
    if metric == "nps":
        return case((Score.category == "promoter", 100), (Score.category == "detractor", -100), else_=0)
    if metric == "csat":
        return case((Score.category == "positive", 100), else_=0)
    return cast(Score.score, Integer)


def _deal_band(value: Any) -> ColumnElement[Any]:
    whens = [(value <= 0, "none")]
    whens += [(value < upper, band) for band, upper in DEAL_BANDS[1:] if upper is not None]
    return case(*whens, else_=DEAL_BANDS[-1][0])


def driver_statement(metric: str, filters: ReportFilters, *, window_days: int) -> Any:
    """The one statement: rows of (factor, level, n, sum, sum of squares, 0) and one of
    (NULL, NULL, n, sum, sum of squares, anonymous answers) for every answer."""
    conditions = [Score.metric == metric, Score.score.is_not(None), *score_conditions(filters)]
    answers = (
        select(
            Score.response_id.label("response_id"),
            Score.customer_id.label("customer_id"),
            Score.submitted_at.label("submitted_at"),
            Score.touchpoint.label("touchpoint"),
            answer_value(metric).label("v"),
        )
        .where(*conditions)
        .cte("answers")
    )
    known = answers.c.customer_id.is_not(None)
    ti = TouchpointInteraction
    # Per answer, the (touchpoint, type) of the customer's interactions in [answer - window,
    # answer]: a range scan of the (customer_id, occurred_at) index, so the cost follows the
    # interactions inside the window, not the customer's whole history. OFFSET 0 keeps the
    # planner from flattening this into a hash join on the customer alone; repeats are left to
    # the DISTINCT of each factor below (one here would sort in every one of the answers' loops).
    visits = (
        select(ti.touchpoint, ti.type)
        .where(
            ti.customer_id == answers.c.customer_id,
            ti.occurred_at >= answers.c.submitted_at - literal(dt.timedelta(days=window_days), Interval()),
            ti.occurred_at <= answers.c.submitted_at,
        )
        .offset(0)
        .lateral("visits")
    )
    history = (
        select(answers.c.response_id, answers.c.v, visits.c.touchpoint, visits.c.type)
        .select_from(answers.join(visits, literal(True)))
        .where(known)
        .cte("history")
    )
    profile = CustomerProfile

    def per_level(factor: str, level: Any, source: Any, n: Any, total: Any, total_sq: Any, *where: Any) -> Any:
        """(factor, level, n, sum, sum of squares, 0) per level over `source`, which has at most
        one row per (answer or customer, level), or per group of answers already summed (the
        fold per touchpoint)."""
        return (
            select(literal(factor, String()), cast(level, String()), n, total, total_sq, literal(0))
            .select_from(source)
            .where(level.is_not(None), *where)
            .group_by(level)
        )

    def answer_moments(v: Any) -> tuple[Any, Any, Any]:
        return func.count(), func.sum(v), func.sum(v * v)

    def visited(column: Any) -> Any:
        """The answers with each level in their history, once however often it happened."""
        return select(history.c.response_id, history.c.v, column.label("level")).distinct().subquery()

    touchpoints, types = visited(history.c.touchpoint), visited(history.c.type)
    a = answers.c.v
    # The answers folded per touchpoint and whether the customer is known: a few rows, from
    # which the journey stages (a touchpoint's) and the overall figures are summed.
    per_touchpoint = (
        select(
            answers.c.touchpoint,
            known.label("known"),
            *(m.label(name) for m, name in zip(answer_moments(a), ("n", "s", "ss"), strict=True)),
        )
        .group_by(answers.c.touchpoint, known)
        .cte("per_touchpoint")
    )
    with_stage = per_touchpoint.join(Touchpoint, Touchpoint.key == per_touchpoint.c.touchpoint)
    folded = per_touchpoint.c
    # The CRM factors are the customer's: fold the answers per customer first, then join the
    # projection once, so each factor groups customers rather than answers.
    per_customer = (
        select(answers.c.customer_id, *(m.label(name) for m, name in zip(answer_moments(a), ("n", "s", "ss"), strict=True)))
        .where(known)
        .group_by(answers.c.customer_id)
        .subquery("per_customer")
    )
    crm = (
        select(
            profile.lifecycle_stage.label("lifecycle_stage"),
            _deal_band(profile.open_deal_value).label("band"),
            profile.tags.label("tags"),
            per_customer.c.n,
            per_customer.c.s,
            per_customer.c.ss,
        )
        .join_from(per_customer, profile, profile.id == per_customer.c.customer_id)
        .cte("crm")
    )
    tag_values = func.jsonb_array_elements_text(crm.c.tags).table_valued("value")
    # A tag listed twice counts once.
    tag = select(tag_values.c.value).distinct().lateral("tag")
    customer_moments = (func.sum(crm.c.n), func.sum(crm.c.s), func.sum(crm.c.ss))
    overall = select(
        literal(None, String()),
        literal(None, String()),
        *(func.coalesce(func.sum(m).filter(folded.known), 0) for m in (folded.n, folded.s, folded.ss)),
        func.coalesce(func.sum(folded.n).filter(~folded.known), 0),
    )
    # One statement, so the scores are read once: `answers`, a CTE used more than once, is
    # materialised, and the visits, the fold per touchpoint and the fold per customer scan it.
    stmt = union_all(
        per_level("touchpoint", touchpoints.c.level, touchpoints, *answer_moments(touchpoints.c.v)),
        per_level("interaction_type", types.c.level, types, *answer_moments(types.c.v)),
        per_level(
            "journey_stage",
            Touchpoint.journey_stage,
            with_stage,
            func.sum(folded.n),
            func.sum(folded.s),
            func.sum(folded.ss),
            folded.known,
        ),
        per_level("lifecycle_stage", crm.c.lifecycle_stage, crm, *customer_moments),
        per_level("open_deal_value", crm.c.band, crm, *customer_moments),
        per_level("tag", tag.c.value, crm.join(tag, literal(True)), *customer_moments),
        overall,
    )
    return stmt


class DriverRepository(SessionRepository):
    async def driver_stats(self, metric: str, filters: ReportFilters, *, window_days: int) -> DriverStats:
        stmt = driver_statement(metric, filters, window_days=window_days)
        # Without JIT compilation for this transaction: the statement's time goes to one index
        # lookup per answer, which compiled expressions do not speed up, while compiling its many
        # expressions took 1-2 s at a million answers (7.3 -> 5.6 s, medians of 4, alternating).
        await self.session.execute(text("SET LOCAL jit = off"))
        everyone = Moments(0, 0, 0)
        anonymous = 0
        levels = {}
        for factor, level, n, total, total_sq, anon in (await self.session.execute(stmt)).all():
            moments = Moments(int(n), int(total), int(total_sq))
            if factor is None:
                everyone, anonymous = moments, int(anon)
            else:
                levels[(factor, level)] = moments
        return DriverStats(everyone, anonymous, levels)
