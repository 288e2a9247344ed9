"""Applies what the CEM service announces on `cem.feedback.v1` to the CRM: every event is kept
in the experience projection, a `followup.requested` also becomes a task for the customer's
owner (once per follow-up, never on a replay), and a `survey.opted_out` sets the customer's
`survey_opt_out`, a `survey.opted_in` clears it (never on a replay).

Rules: an event without a customer (an invitation to a bare email, an anonymous answer) is
ignored; one for a merged duplicate lands on its survivor; one for an erased customer is
kept without the customer's words and makes no task and no change; one for a customer the CRM
never had is refused (dead-letter queue), except an opt-out or opt-in, which is dropped (nothing
to mark, and a recipient's wish is no bad message)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers import service as customers
from crm.customers.repository import CustomerRepository, EventTarget
from crm.deals.repository import open_value_query
from crm.experience.models import FOLLOWUP_REQUESTED, SURVEY_OPTED_IN, SURVEY_OPTED_OUT, ExperienceEvent
from crm.experience.repository import ExperienceRepository
from crm.tasks.models import FOLLOWUP_ORIGIN
from cxkit.db import new_id, session_connection, utcnow
from cxkit.events.payloads import (
    FeedbackReceived,
    FollowupRequested,
    SurveyInvitationCancelled,
    SurveyInvited,
    SurveyOptedIn,
    SurveyOptedOut,
    SurveyReminded,
    SurveyResponseSubmitted,
    SurveyThrottled,
)
from cxkit.kafka.consumer import Delivery, PermanentEventError

# Recipients' wishes about surveys: for a customer the CRM never had, dropped rather than refused.
_SURVEY_WISHES = (SURVEY_OPTED_OUT, SURVEY_OPTED_IN)
# Row ids are derived from the CEM object an event is about, so the same invitation, answer,
# feedback or follow-up announced again under a new event id is still one row.
_ROW_NAMESPACE = uuid.UUID("6d0f3c1e-8b2a-4e57-9c4d-1a7e5f2b3c90")
METRICS = ("nps", "csat", "ces")
# What a follow-up's score says, for the task title.
_FOLLOWUP_LABELS = {"nps": "detractor", "csat": "dissatisfied", "ces": "high effort"}


def row_id(kind: str, ref: uuid.UUID | str) -> uuid.UUID:
    return uuid.uuid5(_ROW_NAMESPACE, f"{kind}\n{ref}")


def _metric(metric: str | None, survey_kind: str | None) -> str | None:
    if metric:
        return metric
    return survey_kind if survey_kind in METRICS else None


def _aware(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise PermanentEventError(f"{field} must carry a timezone")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise PermanentEventError(f"{field} is out of range once converted to UTC") from None


def _invitation_columns(
    p: SurveyInvited | SurveyReminded | SurveyInvitationCancelled | SurveyOptedOut | SurveyOptedIn,
) -> dict[str, Any]:
    """What every event about an invitation (sent, reminded, withdrawn, its link used to opt out
    or back in) says about it."""
    return {
        "ref_id": p.invitation_id,
        "invitation_id": p.invitation_id,
        "survey_id": p.survey_id,
        "survey_name": p.survey_name,
        "survey_kind": p.survey_kind,
        "touchpoint": p.touchpoint,
        "channel": p.channel,
    }


def _row(delivery: Delivery, target: EventTarget, now: dt.datetime) -> dict[str, Any]:
    """The projection row of one event."""
    p = delivery.payload
    kind = delivery.event.type
    at = _aware(delivery.event.time, "time") or now
    # Every column present (null unless the kind sets it), so one multi-row insert takes all rows.
    row: dict[str, Any] = dict.fromkeys(c.name for c in ExperienceEvent.__table__.columns)
    row |= {"event_id": delivery.event.id, "kind": kind, "customer_id": target.customer_id, "recorded_at": now}
    if isinstance(p, SurveyInvited):
        ref: uuid.UUID | str = p.invitation_id
        row |= _invitation_columns(p) | {"expires_at": _aware(p.expires_at, "expires_at"), "occurred_at": at}
    elif isinstance(p, SurveyReminded):
        ref = f"{p.invitation_id}\n{p.reminder}"  # each reminder of an invitation once
        row |= _invitation_columns(p) | {
            "reminder": p.reminder,
            "expires_at": _aware(p.expires_at, "expires_at"),
            "occurred_at": at,
        }
    elif isinstance(p, SurveyInvitationCancelled):
        ref = p.invitation_id  # an invitation is withdrawn once
        row |= _invitation_columns(p) | {"reason": p.reason, "occurred_at": _aware(p.cancelled_at, "cancelled_at")}
    elif isinstance(p, SurveyOptedOut):
        # Each wish once, at its time: a recipient may opt out, back in and out again through
        # one invitation's link (the CEM announces each change once; the address stays with it).
        ref = f"{p.invitation_id}\n{p.opted_out_at}"
        row |= _invitation_columns(p) | {"occurred_at": _aware(p.opted_out_at, "opted_out_at")}
    elif isinstance(p, SurveyOptedIn):
        ref = f"{p.invitation_id}\n{p.opted_in_at}"
        row |= _invitation_columns(p) | {"occurred_at": _aware(p.opted_in_at, "opted_in_at")}
    elif isinstance(p, SurveyThrottled):
        # A suppression has no id of its own: each announcement is one.
        ref = f"{delivery.event.source}\n{delivery.event.id}"
        row |= {"survey_id": p.survey_id, "touchpoint": p.touchpoint, "reason": p.reason, "occurred_at": at}
    elif isinstance(p, SurveyResponseSubmitted):
        ref = p.response_id
        row |= {
            "ref_id": p.response_id,
            "response_id": p.response_id,
            "invitation_id": p.invitation_id,
            "survey_id": p.survey_id,
            "survey_kind": p.survey_kind,
            "touchpoint": p.touchpoint,
            "metric": _metric(p.metric, p.survey_kind),
            "score": p.score,
            "scale_min": p.scale_min,
            "scale_max": p.scale_max,
            "category": p.category,
            "text": p.comment,
            "occurred_at": _aware(p.submitted_at, "submitted_at"),
        }
    elif isinstance(p, FeedbackReceived):
        ref = p.feedback_id
        row |= {
            "ref_id": p.feedback_id,
            "touchpoint": p.touchpoint,
            "channel": p.channel,
            "score": p.rating,
            "scale_min": p.rating_scale_min,
            "scale_max": p.rating_scale_max,
            "text": p.text,
            "sentiment_label": p.sentiment_label,
            "sentiment_score": p.sentiment_score,
            "occurred_at": _aware(p.received_at, "received_at"),
        }
    else:
        assert isinstance(p, FollowupRequested)
        ref = p.followup_id
        row |= {
            "ref_id": p.followup_id,
            "response_id": p.response_id,
            "survey_id": p.survey_id,
            "survey_kind": p.survey_kind,
            "touchpoint": p.touchpoint,
            "metric": _metric(p.metric, p.survey_kind),
            "score": p.score,
            "text": p.comment,
            "reason": p.reason,
            "occurred_at": at,
        }
    row["id"] = row_id(kind, ref)
    if target.erased:
        row["text"] = None  # what reaches the CRM after an erasure keeps nothing the customer wrote
    _check_storable(row)
    return row


def _check_storable(row: dict[str, Any]) -> None:
    """What the event schema allows but a row cannot hold is refused before any statement. The
    rest is refused as the event is decoded: text longer than its column (the payloads' lengths
    are this projection's), a NUL, a whole number past the integer columns (`cxkit.events`)."""
    for column in ("score", "sentiment_score"):
        value = row.get(column)
        if value is not None and not math.isfinite(value):
            raise PermanentEventError(f"{column} is not a finite number")


def followup_title(p: FollowupRequested) -> str:
    """E.g. `Call back: NPS 3 (detractor) at checkout`."""
    metric = _metric(p.metric, p.survey_kind)
    parts = ["Call back:", metric.upper() if metric else "survey answer"]
    if p.score is not None:
        parts.append(f"{p.score:g}")
    if metric in _FOLLOWUP_LABELS:
        parts.append(f"({_FOLLOWUP_LABELS[metric]})")
    if p.touchpoint:
        parts.append(f"at {p.touchpoint}")
    return " ".join(parts)[:300]


def followup_description(p: FollowupRequested) -> str:
    lines = [p.reason.rstrip(".") + "."]
    if p.comment:
        lines.append(f"The customer wrote: “{p.comment}”")
    lines.append("Completing this task tells the experience team the customer was followed up.")
    return "\n\n".join(lines)


def _followup_task(delivery: Delivery, target: EventTarget, due: dt.timedelta, now: dt.datetime) -> dict[str, Any]:
    p: FollowupRequested = delivery.payload
    requested_at = _aware(delivery.event.time, "time") or now
    return {
        "id": new_id(),
        "customer_id": target.customer_id,
        "deal_id": None,
        "title": followup_title(p),
        "description": followup_description(p),
        # The CEM's SLA when it gives one; else the promise runs from when the customer answered,
        # not from when the CRM heard of it.
        "due_at": _aware(p.due_at, "due_at") or requested_at + due,
        "status": "open",
        "priority": "high",
        "owner": target.owner,
        "origin": FOLLOWUP_ORIGIN,
        "origin_ref": str(p.followup_id),
        "completed_at": None,
        "completed_by": None,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


async def apply_experience_events(
    session: AsyncSession, deliveries: Sequence[Delivery], *, followup_due: dt.timedelta | None
) -> int:
    """Apply a run of `cem.feedback.v1` events with a handful of statements: one query finds
    where each customer's events go, one multi-row insert stores them (a known one is
    skipped), and one insert makes the follow-up tasks (when `followup_due` is given; a
    replay passes None and makes none). Returns the number of rows stored."""
    about = [d for d in deliveries if getattr(d.payload, "customer_id", None) is not None]
    if not about:
        return 0
    targets = await CustomerRepository(session).event_targets(list({d.payload.customer_id for d in about}))
    about = [d for d in about if d.payload.customer_id in targets or d.event.type not in _SURVEY_WISHES]
    unknown = sorted({str(d.payload.customer_id) for d in about if d.payload.customer_id not in targets})
    if unknown:
        raise PermanentEventError(f"unknown customer_id: {', '.join(unknown)}")

    now = utcnow()
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    tasks: dict[str, dict[str, Any]] = {}
    for delivery in about:
        target = targets[delivery.payload.customer_id]
        row = _row(delivery, target, now)
        rows.setdefault(row["id"], row)
        if followup_due is not None and delivery.event.type == FOLLOWUP_REQUESTED and not target.erased:
            task = _followup_task(delivery, target, followup_due, now)
            tasks.setdefault(task["origin_ref"], task)
    repo = ExperienceRepository(session)
    stored = await repo.insert_new(list(rows.values()))
    await repo.insert_tasks_once(list(tasks.values()))
    return len(stored)


async def escalate_overdue_followups(session: AsyncSession, deliveries: Sequence[Delivery], *, to: str | None) -> int:
    """`followup.overdue`: the follow-up's open task gets a second owner (`to`) and urgent
    priority, once (a redelivery, or the same report under a new event id, finds it escalated).
    A follow-up without an open task (done already, or never made: an erased customer) is left
    alone. Returns how many tasks were escalated."""
    refs = [str(d.payload.followup_id) for d in deliveries]
    if not refs:
        return 0
    return len(await ExperienceRepository(session).escalate_followup_tasks(refs, to, utcnow()))


async def apply_survey_wishes(session: AsyncSession, deliveries: Sequence[Delivery], *, opted_out: bool) -> int:
    """A run of `survey.opted_out` (`opted_out=True`) or `survey.opted_in` (False), live only (a
    replay must not change the CRM's customers): each customer who asked gets `survey_opt_out`
    set to `opted_out`, as a change of the customer (a new version, its history, a
    `customer.updated` for the CEM's projection), in one statement for the run. A merged
    duplicate's survivor changes; an erased or unknown customer, a bare address and one whose flag
    is that already (a redelivery, or the same wish under a new event id) change nothing. The
    wish's own time (`opted_out_at` / `opted_in_at`) orders it: one older than the flag's last
    setting (a newer wish, or a change by hand) changes nothing, however late it arrives (a re-send
    from the DLQ, a redelivery after the processed-event ids were deleted). Returns how many
    customers changed."""
    wishes = [
        (d.payload.customer_id, d.payload.opted_out_at if opted_out else d.payload.opted_in_at)
        for d in deliveries
        if d.payload.customer_id is not None
    ]
    if not wishes:
        return 0
    conn = await session_connection(session)
    return len(await customers.set_survey_opt_out(conn, wishes, opted_out, open_deal_value=open_value_query))


async def reset_projection(session: AsyncSession) -> None:
    """Before a replay: the projection is emptied (follow-up tasks stay: they are the CRM's own)."""
    await ExperienceRepository(session).delete_all()
