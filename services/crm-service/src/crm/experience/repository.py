"""Every query on the experience projection."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, case, cast, delete, func, or_, select, update

from crm.customers.lifecycle import CustomerErasure
from crm.experience.models import (
    FEEDBACK_RECEIVED,
    INVITATION_CANCELLED,
    RESPONSE_SUBMITTED,
    SURVEY_INVITED,
    SURVEY_REMINDED,
    SURVEY_THROTTLED,
    ExperienceCount,
    ExperienceEvent,
)
from crm.tasks.models import FOLLOWUP_ORIGIN, Task
from cxkit.db import session_connection
from cxkit.kept_figures import KeptFigures
from cxkit.pg_pool import UnnestInsert
from cxkit.repository import SessionRepository

# A run's rows and its follow-up tasks, each in one statement whatever the run's size (a
# multi-row VALUES insert was compiled anew for every run: half the consumer's time).
_INSERT_EVENTS = UnnestInsert(ExperienceEvent.__table__, [c.name for c in ExperienceEvent.__table__.columns])
_TASK_COLUMNS = (
    "id", "customer_id", "deal_id", "title", "description", "due_at", "status", "priority", "owner",
    "origin", "origin_ref", "completed_at", "completed_by", "version", "created_at", "updated_at",
)  # fmt: skip
_INSERT_TASKS = UnnestInsert(Task.__table__, _TASK_COLUMNS)

# On a 1-5 CSAT scale, 4 and 5 are "satisfied" (the SPEC's CSAT definition). Migration crm0022's
# triggers count it into `experience_counts.satisfied` too.
CSAT_SATISFIED_FROM = 4

# The projection counted per kind, metric, category and sentiment label (`ExperienceCount`, kept
# by the triggers of migration crm0022; a key's stripes summed) and the same counts computed from
# the events (`experience_counts_from_rows`).
EXPERIENCE_COUNTS = KeptFigures(
    ExperienceCount.__tablename__,
    "experience_counts_from_rows",
    tuple(c.name for c in ExperienceCount.__table__.primary_key.columns if c.name != "stripe"),
    tuple(c.name for c in ExperienceCount.__table__.columns if not c.primary_key),
    types={"score_sum": "float8"},
)


@dataclass(frozen=True, slots=True)
class ExperienceTotals:
    events: int
    last_event_at: dt.datetime | None
    responses: int
    last_response_at: dt.datetime | None
    csat_answers: int
    csat_mean: float | None
    csat_satisfied: int
    ces_answers: int
    ces_mean: float | None
    feedback: int
    invitations: int
    last_invited_at: dt.datetime | None
    throttled: int
    last_throttled_at: dt.datetime | None
    open_followups: int
    reminders: int
    last_reminded_at: dt.datetime | None
    cancelled: int
    last_cancelled_at: dt.datetime | None


def totals_query(customer_id: Any) -> Select[Any]:
    """The view's experience figures of one customer (a value or a `bindparam`): one aggregate
    over its rows, with the open follow-up tasks as a scalar subquery."""
    e = ExperienceEvent
    response = e.kind == RESPONSE_SUBMITTED
    csat = response & (e.metric == "csat") & e.score.is_not(None)
    ces = response & (e.metric == "ces") & e.score.is_not(None)
    open_followups = (
        select(func.count())
        .select_from(Task)
        .where(Task.customer_id == customer_id, Task.status == "open", Task.origin == FOLLOWUP_ORIGIN)
        .scalar_subquery()
    )
    return select(
        func.count(),
        func.max(e.occurred_at),
        func.count().filter(response),
        func.max(e.occurred_at).filter(response),
        func.count().filter(csat),
        func.avg(cast(e.score, Float)).filter(csat),
        func.sum(case((e.score >= CSAT_SATISFIED_FROM, 1), else_=0)).filter(csat),
        func.count().filter(ces),
        func.avg(cast(e.score, Float)).filter(ces),
        func.count().filter(e.kind == FEEDBACK_RECEIVED),
        func.count().filter(e.kind == SURVEY_INVITED),
        func.max(e.occurred_at).filter(e.kind == SURVEY_INVITED),
        func.count().filter(e.kind == SURVEY_THROTTLED),
        func.max(e.occurred_at).filter(e.kind == SURVEY_THROTTLED),
        open_followups,
        func.count().filter(e.kind == SURVEY_REMINDED),
        func.max(e.occurred_at).filter(e.kind == SURVEY_REMINDED),
        func.count().filter(e.kind == INVITATION_CANCELLED),
        func.max(e.occurred_at).filter(e.kind == INVITATION_CANCELLED),
    ).where(e.customer_id == customer_id)


def totals_of(row: Sequence[Any]) -> ExperienceTotals:
    (
        events,
        last_event,
        responses,
        last_response,
        csat_n,
        csat_mean,
        csat_ok,
        ces_n,
        ces_mean,
        feedback,
        invited,
        last_invited,
        throttled,
        last_throttled,
        followups,
        reminders,
        last_reminded,
        cancelled,
        last_cancelled,
    ) = row
    return ExperienceTotals(
        events=int(events),
        last_event_at=last_event,
        responses=int(responses),
        last_response_at=last_response,
        csat_answers=int(csat_n),
        csat_mean=float(csat_mean) if csat_mean is not None else None,
        csat_satisfied=int(csat_ok or 0),
        ces_answers=int(ces_n),
        ces_mean=float(ces_mean) if ces_mean is not None else None,
        feedback=int(feedback),
        invitations=int(invited),
        last_invited_at=last_invited,
        throttled=int(throttled),
        last_throttled_at=last_throttled,
        open_followups=int(followups or 0),
        reminders=int(reminders),
        last_reminded_at=last_reminded,
        cancelled=int(cancelled),
        last_cancelled_at=last_cancelled,
    )


def latest_condition(customer_id: Any) -> ColumnElement[bool]:
    """The rows `latest_by_key` sorts out: the customer's newest scored NPS answer, feedback
    and suppressed invitation (a value or a `bindparam`)."""
    e = ExperienceEvent

    def newest(*conditions: Any) -> Any:
        return (
            select(e.id)
            .where(e.customer_id == customer_id, *conditions)
            .order_by(e.occurred_at.desc(), e.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    wanted = (
        newest(e.kind == RESPONSE_SUBMITTED, e.metric == "nps", e.score.is_not(None)),
        newest(e.kind == FEEDBACK_RECEIVED),
        newest(e.kind == SURVEY_THROTTLED),
    )
    return or_(*(e.id == sub for sub in wanted))


def latest_by_key(rows: Iterable[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for row in rows:
        if row.kind == RESPONSE_SUBMITTED:
            found["nps"] = row
        elif row.kind == FEEDBACK_RECEIVED:
            found["feedback"] = row
        else:
            found["throttled"] = row
    return found


class ExperienceRepository(SessionRepository):
    async def insert_new(self, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
        """One `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING` for the whole run (a
        known object or event id is skipped; the statement's text never changes, so it is
        prepared once); returns the ids inserted."""
        return set(await _INSERT_EVENTS.inserted(await session_connection(self.session), "id", rows))

    async def insert_tasks_once(self, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
        """Follow-up tasks in one insert; one whose follow-up already has a task is skipped
        (the partial unique index on `origin_ref`). Returns the ids of the tasks made."""
        return set(await _INSERT_TASKS.inserted(await session_connection(self.session), "id", rows))

    async def escalate_followup_tasks(self, followup_ids: Sequence[str], to: str | None, at: dt.datetime) -> set[uuid.UUID]:
        """Escalate the open tasks of these follow-ups not escalated yet: `escalated_to`, urgent
        priority, a new version. One statement; an escalated task is left alone, so a repeated
        report changes nothing. Returns the ids of the tasks escalated."""
        result = await self.session.execute(
            update(Task)
            .where(
                Task.origin == FOLLOWUP_ORIGIN,
                Task.origin_ref.in_(list(followup_ids)),
                Task.status == "open",
                Task.escalated_at.is_(None),
            )
            .values(escalated_to=to, escalated_at=at, priority="urgent", version=Task.version + 1, updated_at=at)
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        )
        return set(result.scalars().all())

    async def totals(self, customer_id: uuid.UUID) -> ExperienceTotals:
        """Every count and average of the view in one aggregate over the customer's rows
        (index on customer_id), with the open follow-up tasks as a scalar subquery."""
        return totals_of((await self.session.execute(totals_query(customer_id))).one())

    async def latest(self, customer_id: uuid.UUID) -> dict[str, ExperienceEvent]:
        """The latest scored NPS answer, feedback and suppressed invitation, in one query:
        keys `nps`, `feedback`, `throttled` (absent when there is none)."""
        rows = (await self.session.scalars(select(ExperienceEvent).where(latest_condition(customer_id)))).all()
        return latest_by_key(rows)

    async def by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, ExperienceEvent]:
        if not ids:
            return {}
        rows = (await self.session.scalars(select(ExperienceEvent).where(ExperienceEvent.id.in_(ids)))).all()
        return {r.id: r for r in rows}

    async def followup_tasks(self, followup_ids: list[uuid.UUID]) -> dict[str, Task]:
        """origin_ref -> the task made for that follow-up."""
        if not followup_ids:
            return {}
        refs = [str(f) for f in followup_ids]
        stmt = select(Task).where(Task.origin == FOLLOWUP_ORIGIN, Task.origin_ref.in_(refs))
        return {t.origin_ref: t for t in (await self.session.scalars(stmt)).all() if t.origin_ref}

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(ExperienceEvent).where(ExperienceEvent.customer_id == duplicate_id).values(customer_id=survivor_id)
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """The customer's own words go; scores, categories, sentiment and times stay (anonymous)."""
        await self.session.execute(
            update(ExperienceEvent).where(ExperienceEvent.customer_id == erasure.customer_id).values(text=None)
        )

    async def delete_all(self) -> None:
        """Empties the projection (a replay rebuilds it from the topic)."""
        await self.session.execute(delete(ExperienceEvent))
