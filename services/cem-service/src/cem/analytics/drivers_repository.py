"""The key-driver query: one statement hands back, per factor level, the sufficient statistics
(answers, sum, sum of squares of the per-answer value) of the answers that have the level, plus
one row for all answers; the level's complement is all minus the level, so Python only sees a
row per level, whatever the number of answers."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Interval, String, and_, case, cast, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics.repository import score_conditions
from cem.customers.models import CustomerProfile
from cem.responses.models import Score
from cem.touchpoints.models import Touchpoint, TouchpointInteraction

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


class DriverRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def driver_stats(
        self,
        metric: str,
        *,
        window_days: int,
        survey_id: uuid.UUID | None,
        touchpoint: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
    ) -> DriverStats:
        conditions = [Score.metric == metric, Score.score.is_not(None), *score_conditions(survey_id, touchpoint, since, until)]
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
        # The customer's interactions in [answer - window, answer]: a range scan of the
        # (customer_id, occurred_at) index per answer.
        history = (
            select(answers.c.response_id, answers.c.v, ti.touchpoint, ti.type)
            .join_from(
                answers,
                ti,
                and_(
                    ti.customer_id == answers.c.customer_id,
                    ti.occurred_at >= answers.c.submitted_at - literal(dt.timedelta(days=window_days), Interval()),
                    ti.occurred_at <= answers.c.submitted_at,
                ),
            )
            .cte("history")
        )
        profile = CustomerProfile
        tag = func.jsonb_array_elements_text(profile.tags).table_valued("value").lateral("tag")

        def level_rows(factor: str, level: Any, source: Any, *where: Any, join: Any = None) -> Any:
            """One row per (answer, level) that holds: DISTINCT, so many visits count once."""
            stmt = select(
                literal(factor, String()).label("factor"), cast(level, String()).label("level"), source.c.response_id, source.c.v
            )
            if join is not None:
                stmt = stmt.select_from(join)
            return stmt.where(level.is_not(None), *where).distinct()

        with_profile = answers.join(profile, profile.id == answers.c.customer_id)
        per_answer = union_all(
            level_rows("touchpoint", history.c.touchpoint, history),
            level_rows("interaction_type", history.c.type, history),
            level_rows(
                "journey_stage",
                Touchpoint.journey_stage,
                answers,
                known,
                join=answers.join(Touchpoint, Touchpoint.key == answers.c.touchpoint),
            ),
            level_rows("lifecycle_stage", profile.lifecycle_stage, answers, join=with_profile),
            level_rows("open_deal_value", _deal_band(profile.open_deal_value), answers, join=with_profile),
            level_rows("tag", tag.c.value, answers, join=with_profile.join(tag, literal(True))),
        ).subquery("per_answer")
        v = per_answer.c.v
        per_level = select(per_answer.c.factor, per_answer.c.level, func.count(), func.sum(v), func.sum(v * v)).group_by(
            per_answer.c.factor, per_answer.c.level
        )
        a = answers.c.v
        overall = select(
            literal(None, String()),
            literal(None, String()),
            func.count().filter(known),
            func.coalesce(func.sum(a).filter(known), 0),
            func.coalesce(func.sum(a * a).filter(known), 0),
            func.count().filter(~known),
        )
        # Two statements would read `answers` twice; one UNION reads it once (the CTE is materialised).
        stmt = union_all(per_level.add_columns(literal(0)), overall)
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
