"""The experience figures next to the funnel: one aggregate over the counts the database keeps
of the CRM's projection of `cem.feedback.v1` (all customers), with the open follow-up tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.experience.models import FEEDBACK_RECEIVED, RESPONSE_SUBMITTED, SURVEY_INVITED, SURVEY_THROTTLED, ExperienceCount
from crm.tasks.models import FOLLOWUP_ORIGIN, Task


@dataclass(frozen=True, slots=True)
class ExperienceOverview:
    invitations: int
    suppressed: int
    responses: int
    promoters: int
    passives: int
    detractors: int
    csat_answers: int
    csat_satisfied: int
    ces_answers: int
    ces_mean: float | None
    feedback: int
    negative_feedback: int
    open_followups: int

    @property
    def nps_answers(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> float | None:
        """% promoters - % detractors, as the CEM service computes it."""
        n = self.nps_answers
        return round(100 * (self.promoters - self.detractors) / n, 1) if n else None

    @property
    def csat(self) -> float | None:
        return round(100 * self.csat_satisfied / self.csat_answers, 1) if self.csat_answers else None


async def experience_overview(session: AsyncSession) -> ExperienceOverview:
    """The figures fold `experience_counts` (a few rows per kind, metric, category and sentiment
    label, kept by the triggers of migration crm0022), not every event."""
    c = ExperienceCount
    response = c.kind == RESPONSE_SUBMITTED
    nps = response & (c.metric == "nps")
    csat = response & (c.metric == "csat")
    ces = response & (c.metric == "ces")
    feedback = c.kind == FEEDBACK_RECEIVED

    def total(column: Any, where: Any) -> Any:
        return func.coalesce(func.sum(column).filter(where), 0)

    open_followups = (
        select(func.count()).select_from(Task).where(Task.status == "open", Task.origin == FOLLOWUP_ORIGIN).scalar_subquery()
    )
    row = (
        await session.execute(
            select(
                total(c.events, c.kind == SURVEY_INVITED),
                total(c.events, c.kind == SURVEY_THROTTLED),
                total(c.events, response),
                total(c.scored, nps & (c.category == "promoter")),
                total(c.scored, nps & (c.category == "passive")),
                total(c.scored, nps & (c.category == "detractor")),
                total(c.scored, csat),
                total(c.satisfied, csat),
                total(c.scored, ces),
                (func.sum(c.score_sum).filter(ces) / func.nullif(func.sum(c.scored).filter(ces), 0)),
                total(c.events, feedback),
                total(c.events, feedback & (c.sentiment_label == "negative")),
                open_followups,
            )
        )
    ).one()
    *counts, ces_mean, feedback_n, negative, followups = row
    return ExperienceOverview(
        *(int(n) for n in counts),  # type: ignore[arg-type]
        ces_mean=round(float(ces_mean), 2) if ces_mean is not None else None,
        feedback=int(feedback_n),
        negative_feedback=int(negative),
        open_followups=int(followups or 0),
    )
