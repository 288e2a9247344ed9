"""Applies `cem.feedback.v1` (published by the CEM service) to the CRM's experience projection,
turns follow-up requests into tasks for the customer's owner, and sets or clears the
`survey_opt_out` of customers who opted out of surveys or back in."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from crm.config import CRMSettings
from crm.experience.models import EXPERIENCE_KINDS, FOLLOWUP_OVERDUE, SURVEY_OPTED_IN, SURVEY_OPTED_OUT
from crm.experience.service import apply_experience_events, apply_survey_wishes, escalate_overdue_followups
from cxkit.kafka.consumer import BatchHandler, Delivery


def consumer_name(settings: CRMSettings) -> str:
    """The live consumer's name. `crm replay` records its own progress as `<name>.replay`
    (cxkit.replay), so the live consumer still applies, with its side effects, any event it had
    not reached itself; the replay's handlers make no task (`projection_handlers`)."""
    return f"{settings.consumer_group}.cem-feedback"


def live_handlers(settings: CRMSettings) -> dict[str, BatchHandler]:
    """The live consumer's: store every event; a `followup.requested` also makes its task, a
    `followup.overdue` escalates it, a `survey.opted_out` sets the customer's `survey_opt_out` and a
    `survey.opted_in` clears it. Each handler applies its run whole; of an opt-out and an opt-in
    for one customer, the one asked later wins, whatever order they arrive in."""
    due = dt.timedelta(hours=settings.followup_due_hours)

    async def on_experience_events(session: AsyncSession, deliveries: list[Delivery]) -> None:
        await apply_experience_events(session, deliveries, followup_due=due)

    async def on_followups_overdue(session: AsyncSession, deliveries: list[Delivery]) -> None:
        await escalate_overdue_followups(session, deliveries, to=settings.followup_escalation_owner)

    async def on_survey_opt_outs(session: AsyncSession, deliveries: list[Delivery]) -> None:
        await apply_experience_events(session, deliveries, followup_due=due)
        await apply_survey_wishes(session, deliveries, opted_out=True)

    async def on_survey_opt_ins(session: AsyncSession, deliveries: list[Delivery]) -> None:
        await apply_experience_events(session, deliveries, followup_due=due)
        await apply_survey_wishes(session, deliveries, opted_out=False)

    return dict.fromkeys(EXPERIENCE_KINDS, on_experience_events) | {
        FOLLOWUP_OVERDUE: on_followups_overdue,
        SURVEY_OPTED_OUT: on_survey_opt_outs,
        SURVEY_OPTED_IN: on_survey_opt_ins,
    }


def projection_handlers() -> dict[str, BatchHandler]:
    """A replay's: the projection only. Tasks and customers are the CRM's own data: a replay never
    makes a task or changes a customer's `survey_opt_out`."""
    return dict.fromkeys(EXPERIENCE_KINDS, on_experience_events_replayed)


async def on_experience_events_replayed(session: AsyncSession, deliveries: list[Delivery]) -> None:
    await apply_experience_events(session, deliveries, followup_due=None)
