"""Opening a follow-up when a customer answers as a detractor."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.db import SOURCE, OutboxMessage
from cem.followups import repository
from cem.followups.models import Followup
from cem.followups.repository import SORT_KEYS, FollowupFilters, FollowupRepository
from cem.followups.schemas import FollowupItem
from cem.followups.sla import SlaBand, due_at
from cem.responses.models import Score, SurveyResponse
from cem.surveys.models import Survey
from cem.surveys.questions import MetricAnswer
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.events.payloads import FollowupOverdue, FollowupRequested, TaskCompleted
from cxkit.http.pagination import PageParams
from cxkit.http.problems import NotFound
from cxkit.kafka.outbox import add_event
from cxkit.pg_pool import CompiledQuery


async def request_followup(
    session: AsyncSession,
    survey: Survey,
    response: SurveyResponse,
    answer: MetricAnswer | Score,
    comment: str | None,
    default_sla: Mapping[str, Sequence[SlaBand]],
    *,
    raised_at: dt.datetime | None = None,
) -> Followup:
    """Record an open follow-up raised at `raised_at` (when the answer was recorded, unless
    told), due by its SLA from then (the survey's bands, else `default_sla`), and ask the CRM
    for a task (`followup.requested`, with the due time)."""
    assert response.customer_id is not None and answer.score is not None
    raised = raised_at or response.recorded_at
    # The name as it is (at most 200 characters), not its repr: a name of control characters has
    # a repr four to ten times longer, past the 500 characters the CRM stores of a reason.
    reason = (
        f"{answer.metric.upper()} {answer.score} on {answer.scale_min}-{answer.scale_max} ({answer.category}) "
        f"in survey '{survey.name}'"
    )
    followup = Followup(
        id=new_id(),
        customer_id=response.customer_id,
        response_id=response.id,
        survey_id=survey.id,
        metric=answer.metric,
        score=answer.score,
        touchpoint=response.touchpoint,
        reason=reason,
        status="open",
        created_at=raised,
        due_at=due_at(raised, answer.metric, answer.score, survey.followup_sla, default_sla),
    )
    FollowupRepository(session).add(followup)
    add_event(
        session,
        OutboxMessage,
        "followup.requested",
        source=SOURCE,
        subject=response.customer_id,
        data=FollowupRequested(
            followup_id=followup.id,
            customer_id=response.customer_id,
            response_id=response.id,
            survey_id=survey.id,
            survey_kind=survey.kind,
            score=answer.score,
            reason=reason,
            touchpoint=response.touchpoint,
            comment=comment,
            metric=answer.metric,
            due_at=followup.due_at,
        ),
    )
    return followup


# The CRM makes a follow-up's task with this origin and the follow-up's id as `origin_ref`.
FOLLOWUP_ORIGINS = frozenset({"followup", "cem.followup"})


def followup_closed_by(task: TaskCompleted) -> uuid.UUID | None:
    """The follow-up a completed CRM task closes, if it is one."""
    if task.origin not in FOLLOWUP_ORIGINS or not task.origin_ref:
        return None
    try:
        return uuid.UUID(task.origin_ref)
    except ValueError:
        return None


async def close_followups(session: AsyncSession, tasks: list[TaskCompleted]) -> int:
    """task.completed: a follow-up's task done closes the follow-up (once: a later completion of
    a reopened task leaves the first closing time). Returns how many were closed."""
    repo = FollowupRepository(session)
    closed = 0
    for task in tasks:
        followup_id = followup_closed_by(task)
        if followup_id is not None:
            by = task.completed_by[:200] if task.completed_by else None
            closed += await repo.close(followup_id, at=task.completed_at, by=by, task_id=task.task_id)
    return closed


_OVERDUE_EVENTS = uuid.UUID("3b8e1f6a-2c4d-4a7e-9b15-6d0c7e2f9a41")


async def announce_overdue(session: AsyncSession, now: dt.datetime, limit: int) -> int:
    """`followup.overdue` for open follow-ups past their due time, once each (the event id is
    derived from the follow-up, so a consumer also knows a re-announcement). Returns how many."""
    overdue = await FollowupRepository(session).claim_overdue(now, limit)
    for followup in overdue:
        assert followup.due_at is not None
        add_event(
            session,
            OutboxMessage,
            "followup.overdue",
            source=SOURCE,
            subject=followup.customer_id,
            event_id=uuid.uuid5(_OVERDUE_EVENTS, str(followup.id)),
            data=FollowupOverdue(
                followup_id=followup.id,
                customer_id=followup.customer_id,
                survey_id=followup.survey_id,
                metric=followup.metric,
                score=followup.score,
                requested_at=followup.created_at,
                due_at=followup.due_at,
            ),
        )
    return len(overdue)


def _item(row: Any, now: dt.datetime) -> FollowupItem:
    """A list row (the follow-up with its customer's name and email) as the API shows it."""
    followup: Followup = row.Followup
    late = followup.status == "open" and followup.due_at is not None and followup.due_at <= now
    shown = {"overdue": late, "customer_name": row.customer_name, "customer_email": row.customer_email}
    return FollowupItem.model_validate(followup).model_copy(update=shown)


async def list_followups(
    session: AsyncSession, filters: FollowupFilters, sort_token: str, page: PageParams
) -> tuple[list[FollowupItem], str | None]:
    sort, now = keyset.parse_sort(sort_token, SORT_KEYS), utcnow()
    found = await FollowupRepository(session).list_page(filters, sort, now, page)
    key = sort.key.column.key
    rows, next_cursor = keyset.cut(found, sort, page, lambda r: (getattr(r.Followup, key), r.Followup.id))
    return [_item(r, now) for r in rows], next_cursor


def export_query(filters: FollowupFilters, sort_token: str) -> CompiledQuery:
    """The statement of a follow-up export: what `list_followups` shows, unpaged, `overdue`
    judged now."""
    return repository.export_query(filters, keyset.parse_sort(sort_token, SORT_KEYS), utcnow())


async def get_followup(session: AsyncSession, followup_id: uuid.UUID) -> FollowupItem:
    row = await FollowupRepository(session).get_with_customer(followup_id)
    if row is None:
        raise NotFound(f"follow-up {followup_id} does not exist")
    return _item(row, utcnow())
