"""The joined customer view (record, open deals, interaction stats, open tasks) and the
customer's timeline, from the CRM's own tables."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customer_view.repository import CURSOR_KINDS, Cursor, TimelineRepository, read_view_rows
from crm.customer_view.schemas import (
    TIMELINE_KINDS,
    CesSummary,
    CsatSummary,
    CustomerChangedEntry,
    CustomerView,
    DealStageEntry,
    DocumentEntry,
    ExperienceSummary,
    FeedbackEntry,
    FeedbackSummary,
    FollowupRequestedEntry,
    InteractionEntry,
    InteractionStats,
    InvitationCancelledEntry,
    InvitationSummary,
    NpsAnswer,
    SurveyInvitedEntry,
    SurveyOptedInEntry,
    SurveyOptedOutEntry,
    SurveyRemindedEntry,
    SurveyResponseEntry,
    SurveyThrottledEntry,
    TaskCompletedEntry,
    TaskCreatedEntry,
    Timeline,
)
from crm.customers import service as customers
from crm.customers.schemas import CustomerRead
from crm.deals.schemas import DealRead
from crm.experience.models import (
    EXPERIENCE_KINDS,
    FEEDBACK_RECEIVED,
    FOLLOWUP_REQUESTED,
    INVITATION_CANCELLED,
    RESPONSE_SUBMITTED,
    SURVEY_INVITED,
    SURVEY_OPTED_IN,
    SURVEY_OPTED_OUT,
    SURVEY_REMINDED,
    ExperienceEvent,
)
from crm.experience.repository import ExperienceRepository, ExperienceTotals
from crm.tasks.schemas import TaskRead
from cxkit import keyset
from cxkit.db import utcnow
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Unprocessable
from cxkit.pg_pool import Row

_WINDOW_DAYS = 30


def purchase_frequency(purchases: int, first_purchase_at: dt.datetime | None, now: dt.datetime) -> float | None:
    """Purchases per 30 days, measured from the first purchase until now, over at least one
    30-day window (so one purchase yesterday is 1 per 30 days, not 30)."""
    if not purchases or first_purchase_at is None:
        return None
    days = max((now - first_purchase_at).total_seconds() / 86400, _WINDOW_DAYS)
    return round(purchases / days * _WINDOW_DAYS, 2)


async def customer_view(pool: asyncpg.Pool, customer_id: uuid.UUID) -> CustomerView:
    """The record and its view rows on one connection of the asyncpg pool: two statements,
    each compiled once, no ORM work (this is the CRM's busiest screen)."""
    async with pool.acquire() as conn:
        customer = await customers.read_customer(conn, customer_id)
        rows = await read_view_rows(conn, customer["id"])
    stats = rows.stats
    average = stats.average_order_value
    return CustomerView(
        customer=CustomerRead.model_validate(customer),
        open_deals=[DealRead.model_validate(dict(d)) for d in rows.open_deals],
        open_deal_value=rows.open_value,
        interaction_stats=InteractionStats(
            count=stats.count,
            last_interaction_at=stats.last_interaction_at,
            last_contacted_at=stats.last_contacted_at,
            purchases=stats.purchases,
            first_purchase_at=stats.first_purchase_at,
            last_purchase_at=stats.last_purchase_at,
            purchase_total=stats.purchase_total,
            average_order_value=average.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) if average is not None else None,
            purchase_frequency_per_30d=purchase_frequency(stats.purchases, stats.first_purchase_at, utcnow()),
        ),
        open_tasks=[TaskRead.model_validate(dict(t)) for t in rows.open_tasks],
        experience=experience_summary_of(rows.experience, rows.latest),
    )


async def experience_summary(session: AsyncSession, customer_id: uuid.UUID) -> ExperienceSummary | None:
    """From the local projection of `cem.feedback.v1` (never a call to the CEM service): one
    aggregate and one query for the latest rows. Null when nothing was ever reported."""
    repo = ExperienceRepository(session)
    totals = await repo.totals(customer_id)
    if not totals.events or totals.last_event_at is None:
        return None
    return experience_summary_of(totals, await repo.latest(customer_id))


def experience_summary_of(totals: ExperienceTotals, latest: dict[str, Any]) -> ExperienceSummary | None:
    """The view's `experience` from the local projection of `cem.feedback.v1` (never a call to
    the CEM service): its totals and latest rows. Null when nothing was ever reported."""
    if not totals.events or totals.last_event_at is None:
        return None
    nps, feedback, throttled = latest.get("nps"), latest.get("feedback"), latest.get("throttled")
    return ExperienceSummary(
        latest_nps=NpsAnswer(
            score=nps.score,
            category=nps.category,
            scale_min=nps.scale_min,
            scale_max=nps.scale_max,
            answered_at=nps.occurred_at,
            survey_id=nps.survey_id,
            touchpoint=nps.touchpoint,
            comment=nps.text,
        )
        if nps is not None and nps.score is not None
        else None,
        csat=CsatSummary(
            average=round(totals.csat_mean, 2),
            satisfied_percent=round(100 * totals.csat_satisfied / totals.csat_answers, 1),
            answers=totals.csat_answers,
        )
        if totals.csat_answers and totals.csat_mean is not None
        else None,
        ces=CesSummary(average=round(totals.ces_mean, 2), answers=totals.ces_answers)
        if totals.ces_answers and totals.ces_mean is not None
        else None,
        responses=totals.responses,
        last_response_at=totals.last_response_at,
        last_feedback=FeedbackSummary(
            text=feedback.text,
            sentiment_label=feedback.sentiment_label,
            sentiment_score=feedback.sentiment_score,
            rating=feedback.score,
            touchpoint=feedback.touchpoint,
            channel=feedback.channel,
            received_at=feedback.occurred_at,
        )
        if feedback is not None
        else None,
        feedback=totals.feedback,
        open_followups=totals.open_followups,
        invitations=InvitationSummary(
            sent=totals.invitations,
            last_sent_at=totals.last_invited_at,
            suppressed=totals.throttled,
            last_suppressed_at=totals.last_throttled_at,
            last_suppression_reason=throttled.reason if throttled is not None else None,
            reminders=totals.reminders,
            last_reminded_at=totals.last_reminded_at,
            cancelled=totals.cancelled,
            last_cancelled_at=totals.last_cancelled_at,
        ),
        updated_at=totals.last_event_at,
    )


async def customer_timeline(pool: asyncpg.Pool, customer_id: uuid.UUID, kinds: list[str], page: PageParams) -> Timeline:
    """Newest first. A page is found with one UNION ALL over the sources, then each kind's
    details with one query for the page, all on one pooled connection."""
    before: Cursor | None = keyset.read_cursor(page, CURSOR_KINDS)
    if before is not None and before[1] not in TIMELINE_KINDS:
        # Refused like any other cursor not made by this list (and before any statement is
        # built for it: a shape per made-up kind would fill the statement cache).
        raise Unprocessable(keyset.BAD_CURSOR)
    async with pool.acquire() as conn:
        customer = await customers.read_customer(conn, customer_id)
        repo = TimelineRepository(conn)
        found = await repo.page(customer["id"], kinds, before, page.limit)
        keys, next_cursor = keyset.trim(found, page.limit, CURSOR_KINDS, lambda key: key)

        def ids(kind: str) -> list[uuid.UUID]:
            return [i for _, k, i in keys if k == kind]

        interactions = await repo.interactions(ids("interaction"))
        changes = await repo.stage_changes(ids("deal_stage_changed"))
        field_changes = await repo.field_changes(ids("customer_changed"))
        tasks = await repo.tasks(ids("task_created") + ids("task_completed"))
        documents = await repo.documents(ids("document_added"))
        experience = await repo.experience([i for _, k, i in keys if k in EXPERIENCE_KINDS])
        followup_tasks = await repo.followup_tasks(
            [e.ref_id for e in experience.values() if e.kind == FOLLOWUP_REQUESTED and e.ref_id is not None]
        )

    items: list[object] = []
    for at, kind, entry_id in keys:
        if kind == "interaction":
            i = interactions[entry_id]
            items.append(
                InteractionEntry(
                    at=at,
                    id=i["id"],
                    type=i["type"],
                    channel=i["channel"],
                    touchpoint=i["touchpoint"],
                    summary=i["summary"],
                    amount=i["amount"],
                    currency=i["currency"],
                )
            )
        elif kind == "deal_stage_changed":
            change = changes[entry_id]
            items.append(
                DealStageEntry(
                    at=at,
                    id=change.id,
                    deal_id=change.deal_id,
                    deal_title=change.deal_title,
                    from_stage=change.from_stage,
                    to_stage=change.to_stage,
                    status=change.to_status,
                    amount=change.amount,
                    changed_by=change.changed_by,
                )
            )
        elif kind == "customer_changed":
            f = field_changes[entry_id]
            items.append(
                CustomerChangedEntry(
                    at=at,
                    id=f.id,
                    version=f.version,
                    changed_by=f.changed_by,
                    via=f.via,
                    changes=customers.field_changes(f.changes),  # type: ignore[arg-type]
                )
            )
        elif kind == "task_created":
            t = tasks[entry_id]
            items.append(TaskCreatedEntry(at=at, id=t.id, title=t.title, due_at=t.due_at, owner=t.owner, origin=t.origin))
        elif kind == "task_completed":
            t = tasks[entry_id]
            items.append(
                TaskCompletedEntry(
                    at=at, id=t.id, title=t.title, completed_by=t.completed_by, origin=t.origin, origin_ref=t.origin_ref
                )
            )
        elif kind == "document_added":
            d = documents[entry_id]
            items.append(DocumentEntry(at=at, id=d.id, filename=d.filename, content_type=d.content_type, deal_id=d.deal_id))
        else:
            items.append(_experience_entry(experience[entry_id], followup_tasks))
    return Timeline(items=items, next_cursor=next_cursor)  # type: ignore[arg-type]


def _experience_entry(e: ExperienceEvent | Row, followup_tasks: dict[str, Row]) -> object:
    if e.kind in (SURVEY_INVITED, SURVEY_REMINDED, INVITATION_CANCELLED, SURVEY_OPTED_OUT, SURVEY_OPTED_IN):
        about = {
            "at": e.occurred_at,
            "id": e.id,
            "invitation_id": e.invitation_id,
            "survey_id": e.survey_id,
            "survey_name": e.survey_name,
            "survey_kind": e.survey_kind,
            "touchpoint": e.touchpoint,
            "channel": e.channel,
        }
        if e.kind == SURVEY_INVITED:
            return SurveyInvitedEntry(**about, expires_at=e.expires_at)
        if e.kind == SURVEY_REMINDED:
            return SurveyRemindedEntry(**about, reminder=e.reminder, expires_at=e.expires_at)
        if e.kind == SURVEY_OPTED_OUT:
            return SurveyOptedOutEntry(**about)
        if e.kind == SURVEY_OPTED_IN:
            return SurveyOptedInEntry(**about)
        return InvitationCancelledEntry(**about, reason=e.reason)
    if e.kind == RESPONSE_SUBMITTED:
        return SurveyResponseEntry(
            at=e.occurred_at,
            id=e.id,
            response_id=e.response_id,
            survey_id=e.survey_id,
            survey_kind=e.survey_kind,
            metric=e.metric,
            score=e.score,
            scale_min=e.scale_min,
            scale_max=e.scale_max,
            category=e.category,
            comment=e.text,
            touchpoint=e.touchpoint,
        )
    if e.kind == FEEDBACK_RECEIVED:
        return FeedbackEntry(
            at=e.occurred_at,
            id=e.id,
            feedback_id=e.ref_id,
            text=e.text,
            rating=e.score,
            rating_scale_min=e.scale_min,
            rating_scale_max=e.scale_max,
            sentiment_label=e.sentiment_label,
            sentiment_score=e.sentiment_score,
            touchpoint=e.touchpoint,
            channel=e.channel,
        )
    if e.kind == FOLLOWUP_REQUESTED:
        task = followup_tasks.get(str(e.ref_id))
        return FollowupRequestedEntry(
            at=e.occurred_at,
            id=e.id,
            followup_id=e.ref_id,
            survey_id=e.survey_id,
            response_id=e.response_id,
            metric=e.metric,
            score=e.score,
            reason=e.reason,
            comment=e.text,
            touchpoint=e.touchpoint,
            task_id=task.id if task else None,
            task_status=task.status if task else None,
        )
    return SurveyThrottledEntry(at=e.occurred_at, id=e.id, survey_id=e.survey_id, reason=e.reason, touchpoint=e.touchpoint)
