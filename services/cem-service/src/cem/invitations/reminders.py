"""Reminders: a survey's `reminders` (`after_days`, `max`) remind each invitation not answered yet,
`after_days` after it went out and after each reminder, at most `max` times (`survey.reminded`).

They stop by themselves when the invitation is answered, expires or is cancelled, when the
survey is no longer active, and when the customer opts out or is erased. The fatigue rule
applies to them as to invitations: a recipient sent another invitation, or reminded of one,
within `CEM_FATIGUE_DAYS` is not reminded; that reminder is stored as a suppression (reason
`fatigue`, origin `reminder`) and announced as `survey.throttled`, and the next is judged
`after_days` later (a suppressed reminder does not count towards `max`).

Each reminder hands out a link of its own (in the event's `url`), stored as a hash like the
invitation's first link; every link of an invitation answers it, until it expires."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.config import CEMSettings
from cem.customers.repository import CustomerProfileRepository
from cem.db import SOURCE, OutboxMessage
from cem.invitations.models import Invitation
from cem.invitations.repository import InvitationRepository
from cem.invitations.service import new_link, respondent_url, unsubscribe_url
from cem.recipients import RecipientKey
from cem.suppressions.repository import SuppressionRepository
from cem.suppressions.service import announce_suppression
from cem.surveys.models import Survey
from cxkit.db import new_id, utcnow
from cxkit.events.payloads import SurveyReminded
from cxkit.kafka.outbox import add_event, outbox_batch


@dataclass
class Reminding:
    """What one batch of a survey's reminders did."""

    reminded: int = 0
    suppressed: int = 0


def _key(invitation: Invitation) -> RecipientKey:
    if invitation.customer_id is not None:
        return ("customer", invitation.customer_id)
    return ("email", invitation.email_lower)


async def _fatigued(
    session: AsyncSession, invitations: list[Invitation], since: dt.datetime
) -> dict[RecipientKey, set[uuid.UUID]]:
    """Per recipient, the invitations sent to them (or reminded) after `since`, in one query."""
    customer_ids = {i.customer_id for i in invitations if i.customer_id is not None}
    emails = {i.email_lower for i in invitations if i.customer_id is None and i.email_lower}
    contacted: dict[RecipientKey, set[uuid.UUID]] = {}
    for invitation_id, customer_id, email_lower in await InvitationRepository(session).recently_contacted(
        customer_ids, emails, since
    ):
        if customer_id in customer_ids:
            contacted.setdefault(("customer", customer_id), set()).add(invitation_id)
        if email_lower in emails:
            contacted.setdefault(("email", email_lower), set()).add(invitation_id)
    return contacted


def announce_reminder(session: AsyncSession, invitation: Invitation, survey: Survey, email: str | None, url: str) -> None:
    assert survey.reminder_max is not None
    add_event(
        session,
        OutboxMessage,
        "survey.reminded",
        source=SOURCE,
        subject=invitation.customer_id,
        data=SurveyReminded(
            invitation_id=invitation.id,
            survey_id=survey.id,
            survey_name=survey.name,
            survey_kind=survey.kind,
            customer_id=invitation.customer_id,
            email=email,
            touchpoint=invitation.touchpoint,
            channel=invitation.channel,
            reminder=invitation.reminders_sent,
            max_reminders=survey.reminder_max,
            expires_at=invitation.expires_at,
            url=url,
            unsubscribe_url=unsubscribe_url(url),
            language=survey.language,
        ),
    )


async def send_reminders(session: AsyncSession, settings: CEMSettings, survey: Survey, limit: int) -> Reminding:
    """Remind (or suppress the reminder of) up to `limit` of the survey's invitations that are due one."""
    done = Reminding()
    if survey.status != "active" or not survey.reminder_after_days or not survey.reminder_max:
        return done
    now = utcnow()
    due = await InvitationRepository(session).claim_reminders_due(
        survey.id, survey.reminder_max, now - dt.timedelta(days=survey.reminder_after_days), now, limit
    )
    if not due:
        return done
    contacted: dict[RecipientKey, set[uuid.UUID]] = {}
    if settings.fatigue_days:
        contacted = await _fatigued(session, due, now - dt.timedelta(days=settings.fatigue_days))
    profiles = await CustomerProfileRepository(session).by_ids({i.customer_id for i in due if i.customer_id})
    suppressions: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    async with outbox_batch(session, OutboxMessage):
        for invitation in due:
            key = _key(invitation)
            invitation.reminder_judged_at = now
            if contacted.get(key, set()) - {invitation.id}:
                suppressions.append(
                    {
                        "id": new_id(),
                        "survey_id": survey.id,
                        "customer_id": invitation.customer_id,
                        "email": invitation.email if invitation.customer_id is None else None,
                        "email_lower": invitation.email_lower if invitation.customer_id is None else None,
                        "interaction_id": None,
                        "invitation_id": invitation.id,
                        "touchpoint": invitation.touchpoint,
                        "origin": "reminder",
                        "reason": "fatigue",
                        "created_at": now,
                    }
                )
                continue
            invitation.reminders_sent += 1
            invitation.last_reminded_at = now
            # A second invitation of the same recipient in this batch is fatigued by this reminder.
            contacted.setdefault(key, set()).add(invitation.id)
            profile = profiles.get(invitation.customer_id) if invitation.customer_id else None
            token, token_hash = new_link()
            links.append(
                {
                    "token_hash": token_hash,
                    "invitation_id": invitation.id,
                    "reminder": invitation.reminders_sent,
                    "created_at": now,
                }
            )
            address = invitation.email or (profile.email if profile else None)
            announce_reminder(session, invitation, survey, address, respondent_url(settings, token))
            done.reminded += 1
        await InvitationRepository(session).add_links(links)
        stored = await SuppressionRepository(session).insert_new(suppressions)
        for row in suppressions:
            if row["id"] in stored:
                announce_suppression(session, row)
                done.suppressed += 1
    await session.flush()
    return done
