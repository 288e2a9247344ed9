"""The experience figures next to the funnel: one aggregate over the CRM's projection of
`cem.feedback.v1` (all customers), with the open follow-up tasks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Float, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.experience.models import FEEDBACK_RECEIVED, RESPONSE_SUBMITTED, SURVEY_INVITED, SURVEY_THROTTLED, ExperienceEvent
from crm.experience.repository import CSAT_SATISFIED_FROM
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
    e = ExperienceEvent
    response = e.kind == RESPONSE_SUBMITTED
    scored = response & e.score.is_not(None)
    nps = scored & (e.metric == "nps")
    csat = scored & (e.metric == "csat")
    ces = scored & (e.metric == "ces")
    feedback = e.kind == FEEDBACK_RECEIVED
    open_followups = (
        select(func.count()).select_from(Task).where(Task.status == "open", Task.origin == FOLLOWUP_ORIGIN).scalar_subquery()
    )
    row = (
        await session.execute(
            select(
                func.count().filter(e.kind == SURVEY_INVITED),
                func.count().filter(e.kind == SURVEY_THROTTLED),
                func.count().filter(response),
                func.count().filter(nps & (e.category == "promoter")),
                func.count().filter(nps & (e.category == "passive")),
                func.count().filter(nps & (e.category == "detractor")),
                func.count().filter(csat),
                func.count().filter(csat & (e.score >= CSAT_SATISFIED_FROM)),
                func.count().filter(ces),
                func.avg(cast(e.score, Float)).filter(ces),
                func.count().filter(feedback),
                func.count().filter(feedback & (e.sentiment_label == "negative")),
                open_followups,
            )
        )
    ).one()
    *counts, ces_mean, feedback_n, negative, followups = row
    return ExperienceOverview(
        *(int(c) for c in counts),  # type: ignore[arg-type]
        ces_mean=round(float(ces_mean), 2) if ces_mean is not None else None,
        feedback=int(feedback_n),
        negative_feedback=int(negative),
        open_followups=int(followups or 0),
    )
