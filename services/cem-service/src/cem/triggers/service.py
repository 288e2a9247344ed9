"""The invitation rules: which interaction invites to which survey, when a survey comes round
again, and when an invitation is suppressed instead (and why).

For each candidate, in order: an erased customer or one who opted out is never invited
(`erased`, `opted_out`); a survey does not invite the same recipient twice within its
`throttle_days` (`survey_throttle`); nobody gets more than one invitation per
`CEM_FATIGUE_DAYS` across all surveys (`fatigue`). Both windows reach either side of the new
invitation's send time: a scheduled invitation counts when it is due within that many days of
it, before or after. Scheduled invitations count, and so do sent ones cancelled afterwards (they
reached the recipient); ones cancelled before they went out do not. A suppressed invitation is
stored with its reason and announced as `survey.throttled`.

A trigger's invitation is due `delay_minutes` after the interaction's `occurred_at`, but never
counted from a time further ahead than the clock skew (`cem.fields.CLOCK_SKEW`): an interaction
dated later than that (the CRM takes years up to 9000) counts as happening now, so a mistyped
year neither schedules the survey for then nor holds back every later one.

A run of candidates is judged against a ledger of the recipients' recent invitations loaded
with one query, and every decision is added to it at once, so the second of two matching
interactions in one poll sees the first one's invitation."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.config import CEMSettings
from cem.customers.repository import CustomerProfileRepository
from cem.db import OutboxMessage
from cem.fields import CLOCK_SKEW
from cem.followups.repository import FollowupRepository
from cem.invitations.models import Invitation
from cem.invitations.repository import InvitationRepository
from cem.invitations.service import announce_invitation, new_link, respondent_url
from cem.recipients import Recipient, RecipientKey
from cem.suppressions.repository import OptOutRepository, SuppressionRepository
from cem.suppressions.service import announce_suppression
from cem.surveys.models import Survey
from cem.surveys.repository import SurveyRepository
from cem.touchpoints.schemas import StoredInteraction
from cem.triggers.repository import TriggerRepository
from cxkit.db import new_id, utcnow
from cxkit.kafka.outbox import outbox_batch


@dataclass
class Candidate:
    """An invitation a rule would make: `survey` to `recipient`, due at `due_at`."""

    survey: Survey
    recipient: Recipient
    due_at: dt.datetime
    origin: str
    touchpoint: str | None
    interaction_id: uuid.UUID | None = None


@dataclass
class Ledger:
    """Recent invitations (and suppressions, for recurrence) per recipient: (survey_id, time)."""

    entries: dict[RecipientKey, list[tuple[uuid.UUID, dt.datetime]]] = field(default_factory=lambda: defaultdict(list))
    # The bare addresses (lower-cased) that asked for no more surveys; a customer who did has
    # `survey_opt_out` on their profile.
    opted_out: set[str] = field(default_factory=set)

    def add(self, key: RecipientKey, survey_id: uuid.UUID, at: dt.datetime) -> None:
        self.entries[key].append((survey_id, at))

    def invited_by(self, key: RecipientKey, survey_id: uuid.UUID, around: dt.datetime, window: dt.timedelta) -> bool:
        """Whether the survey invited the recipient (or will) less than `window` before or after `around`."""
        return any(s == survey_id and abs(t - around) < window for s, t in self.entries.get(key, ()))

    def invited(self, key: RecipientKey, around: dt.datetime, window: dt.timedelta) -> bool:
        """Whether any survey invited the recipient (or will) less than `window` before or after `around`."""
        return any(abs(t - around) < window for _, t in self.entries.get(key, ()))


def verdict(candidate: Candidate, send_at: dt.datetime, ledger: Ledger, fatigue_days: int) -> str | None:
    """Why the candidate must not be invited, or None."""
    profile = candidate.recipient.profile
    if profile is not None and profile.erased_at is not None:
        return "erased"
    if profile is not None and profile.survey_opt_out:
        return "opted_out"
    if candidate.recipient.customer_id is None and candidate.recipient.email_lower in ledger.opted_out:
        return "opted_out"
    throttle = candidate.survey.trigger_throttle_days or 0
    key = candidate.recipient.key
    if throttle and ledger.invited_by(key, candidate.survey.id, send_at, dt.timedelta(days=throttle)):
        return "survey_throttle"
    if fatigue_days and ledger.invited(key, send_at, dt.timedelta(days=fatigue_days)):
        return "fatigue"
    return None


async def load_ledger(session: AsyncSession, recipients: Iterable[Recipient], since: dt.datetime) -> Ledger:
    """The recipients' invitations due after `since` (those due later too, however far ahead), in one query."""
    recipients = list(recipients)
    customer_ids = {r.customer_id for r in recipients if r.customer_id is not None}
    emails = {r.email_lower for r in recipients if r.customer_id is None and r.email_lower}
    ledger = Ledger()
    for survey_id, customer_id, email_lower, at in await InvitationRepository(session).recent_sends(customer_ids, emails, since):
        if customer_id in customer_ids:
            ledger.add(("customer", customer_id), survey_id, at)
        if email_lower in emails:
            ledger.add(("email", email_lower), survey_id, at)
    ledger.opted_out = await OptOutRepository(session).opted_out(emails)
    return ledger


@dataclass
class Outcome:
    invited: int = 0
    scheduled: int = 0
    # Of a scheduler's batch: how many customers (or follow-ups) it took.
    judged: int = 0
    suppressed: dict[str, int] = field(default_factory=lambda: defaultdict(int))


async def decide(
    session: AsyncSession, settings: CEMSettings, candidates: list[Candidate], ledger: Ledger, now: dt.datetime
) -> Outcome:
    """Judge the candidates in order and write the invitations (due now: sent and announced;
    later: scheduled) and suppressions (stored and announced) with one insert each. Should a
    concurrent writer have judged a (survey, interaction) meanwhile, those inserts skip it."""
    outcome = Outcome()
    invitations: list[dict[str, Any]] = []
    links: dict[uuid.UUID, tuple[str, Candidate]] = {}
    suppressions: list[dict[str, Any]] = []
    ttl = dt.timedelta(days=settings.invitation_ttl_days)
    for candidate in candidates:
        recipient = candidate.recipient
        send_at = max(candidate.due_at, now)
        reason = verdict(candidate, send_at, ledger, settings.fatigue_days)
        row_id = new_id()
        if reason is not None:
            suppressions.append(
                {
                    "id": row_id,
                    "survey_id": candidate.survey.id,
                    "customer_id": recipient.customer_id,
                    "email": recipient.email if recipient.customer_id is None else None,
                    "email_lower": recipient.email_lower if recipient.customer_id is None else None,
                    "interaction_id": candidate.interaction_id,
                    "touchpoint": candidate.touchpoint,
                    "origin": candidate.origin,
                    "reason": reason,
                    "created_at": now,
                }
            )
            continue
        ledger.add(recipient.key, candidate.survey.id, send_at)
        due_now = candidate.due_at <= now
        token_hash = None
        if due_now:
            token, token_hash = new_link()
            links[row_id] = (token, candidate)
        invitations.append(
            {
                "id": row_id,
                "survey_id": candidate.survey.id,
                "customer_id": recipient.customer_id,
                "email": recipient.email,
                "email_lower": recipient.email_lower,
                "token_hash": token_hash,
                "touchpoint": candidate.touchpoint,
                "channel": None,
                "origin": candidate.origin,
                "interaction_id": candidate.interaction_id,
                "created_at": now,
                "send_at": send_at,
                "sent_at": now if due_now else None,
                "expires_at": send_at + ttl,
            }
        )
    inserted = await InvitationRepository(session).insert_new(invitations)
    stored = await SuppressionRepository(session).insert_new(suppressions)
    async with outbox_batch(session, OutboxMessage):  # the announcements in one insert
        for row in invitations:
            if row["id"] not in inserted:
                continue
            if row["id"] in links:
                token, candidate = links[row["id"]]
                announce_invitation(session, row, candidate.survey, respondent_url(settings, token), candidate.recipient.address)
                outcome.invited += 1
            else:
                outcome.scheduled += 1
        for row in suppressions:
            if row["id"] in stored:
                outcome.suppressed[row["reason"]] += 1
                announce_suppression(session, row)
    return outcome


def _matches(survey: Survey, interaction: StoredInteraction) -> bool:
    """The trigger's interaction type, and its touchpoint if it names one: a lower-case key, while
    an interaction's touchpoint is free text at the CRM, so compared whatever its case."""
    return survey.trigger_interaction_type == interaction.type and (
        survey.trigger_touchpoint is None
        or (interaction.touchpoint is not None and survey.trigger_touchpoint.casefold() == interaction.touchpoint.casefold())
    )


async def invite_for_interactions(session: AsyncSession, settings: CEMSettings, interactions: list[StoredInteraction]) -> Outcome:
    """Every active survey whose trigger matches an interaction (its type, and its touchpoint
    when the trigger names one) invites the interaction's customer `delay_minutes` after it
    (after now, for an interaction dated further ahead than the clock skew), unless a rule
    suppresses it. Interactions are judged in the order given, each once per
    survey: a pair that already made an invitation or a suppression (a redelivery, or an event
    the live consumer reaches after a replay stored it) is left alone."""
    triggers = TriggerRepository(session)
    surveys = await triggers.active_triggered_by({i.type for i in interactions})
    if not surveys:
        return Outcome()
    pairs = [(survey, i) for i in interactions for survey in surveys if _matches(survey, i)]
    judged = await triggers.judged({i.interaction_id for _, i in pairs})
    now = utcnow()
    candidates = [
        Candidate(
            survey=survey,
            recipient=interaction.recipient,
            due_at=_due(interaction.occurred_at, survey.trigger_delay_minutes or 0, now),
            origin="trigger",
            touchpoint=survey.touchpoint or interaction.touchpoint,
            interaction_id=interaction.interaction_id,
        )
        for survey, interaction in pairs
        if (survey.id, interaction.interaction_id) not in judged
    ]
    if not candidates:
        return Outcome()
    window = max([settings.fatigue_days, *(s.trigger_throttle_days or 0 for s in surveys)])
    earliest = min(max(c.due_at, now) for c in candidates)
    ledger = await load_ledger(session, (c.recipient for c in candidates), earliest - dt.timedelta(days=window))
    return await decide(session, settings, candidates, ledger, now)


def _due(occurred_at: dt.datetime, delay_minutes: int, now: dt.datetime) -> dt.datetime:
    """`delay_minutes` after the interaction; after now for one dated beyond the clock skew ahead."""
    start = occurred_at if occurred_at <= now + CLOCK_SKEW else now
    try:
        return start + dt.timedelta(minutes=delay_minutes)
    except OverflowError:
        return start


async def reinvite_recurring(session: AsyncSession, settings: CEMSettings, survey_id: uuid.UUID, limit: int) -> Outcome:
    """A relationship survey comes round: each customer whose latest invitation or suppression
    from it is older than its `recurrence_days` is invited again (or suppressed, by the same
    rules). The survey row is locked, so two schedulers never re-invite twice."""
    triggers = TriggerRepository(session)
    survey = await triggers.lock_survey(survey_id)
    if survey is None or not survey.recurrence_days:
        return Outcome()
    now = utcnow()
    due = await triggers.customers_due_again(survey.id, now - dt.timedelta(days=survey.recurrence_days), limit)
    if not due:
        return Outcome()
    profiles = await CustomerProfileRepository(session).by_ids(due)
    recipients = [Recipient(customer_id=cid, email=None, profile=profiles.get(cid)) for cid in due]
    window = max(settings.fatigue_days, survey.trigger_throttle_days or 0)
    ledger = await load_ledger(session, recipients, now - dt.timedelta(days=window))
    candidates = [
        Candidate(survey=survey, recipient=r, due_at=now, origin="recurrence", touchpoint=survey.touchpoint) for r in recipients
    ]
    outcome = await decide(session, settings, candidates, ledger, now)
    outcome.judged = len(due)
    return outcome


async def resurvey_followed_up(session: AsyncSession, settings: CEMSettings, survey_id: uuid.UUID, limit: int) -> Outcome:
    """Close the loop: a customer whose follow-up of this survey was closed `resurvey_after_days`
    ago is invited to it again (origin `followup`), or suppressed by the same rules. Only
    follow-ups closed while the survey's re-survey was on count (one closed while it was off is
    judged at its close), and only those due within `CEM_RESURVEY_CATCH_UP_DAYS`: turning
    re-survey on, or a scheduler stopped for weeks, never asks every customer ever followed up.
    Each closed follow-up is judged once, and a customer with several in a round is decided once
    (by the latest one). Returns the outcome; `judged` says how many follow-ups it took."""
    survey = await TriggerRepository(session).lock_survey(survey_id)
    if survey is None or not survey.resurvey_after_days:
        return Outcome()
    now = utcnow()
    closed_before = now - dt.timedelta(days=survey.resurvey_after_days)
    closed_after = closed_before - dt.timedelta(days=settings.resurvey_catch_up_days)
    followups = await FollowupRepository(session).claim_to_resurvey(survey.id, closed_after, closed_before, now, limit)
    if not followups:
        return Outcome()
    latest = {f.customer_id: f for f in followups}  # in closing order: the latest one per customer stays
    profiles = await CustomerProfileRepository(session).by_ids(set(latest))
    candidates = [
        Candidate(
            survey=survey,
            recipient=Recipient(customer_id=f.customer_id, email=None, profile=profiles.get(f.customer_id)),
            due_at=now,
            origin="followup",
            touchpoint=f.touchpoint or survey.touchpoint,
        )
        for f in latest.values()
    ]
    window = max(settings.fatigue_days, survey.trigger_throttle_days or 0)
    ledger = await load_ledger(session, (c.recipient for c in candidates), now - dt.timedelta(days=window))
    outcome = await decide(session, settings, candidates, ledger, now)
    outcome.judged = len(followups)
    return outcome


async def resurveying_surveys(session: AsyncSession) -> list[uuid.UUID]:
    return await TriggerRepository(session).active_resurveying()


async def recurring_surveys(session: AsyncSession) -> list[uuid.UUID]:
    return await TriggerRepository(session).active_recurring()


@dataclass
class Sending:
    sent: int = 0
    cancelled: int = 0


# Why the scheduler cancels a scheduled invitation of a survey that stopped taking answers before
# it fell due (`cancel_reason`).
SURVEY_CLOSED = "survey_closed"
SURVEY_DRAFT = "survey_draft"
_HOLD = "hold"


def _survey_verdict(survey: Survey, invitation: Invitation, now: dt.datetime) -> str | None:
    """What the invitation's survey says of sending it now: None (send it), `survey_closed`
    (closed by hand or by its `max_responses`, or past its `closes_at`: it takes no answers and
    is not expected to again, so the invitation is cancelled), `survey_draft` (back in draft
    until after the invitation's `expires_at`: had it gone out on time, it would have expired by
    now, so it is cancelled rather than sent that late) or `_HOLD` (back in draft, a pause: it
    stays scheduled and goes out once the survey is active again, as the survey's reminders
    pause and resume)."""
    if survey.status == "closed" or (survey.closes_at is not None and now >= survey.closes_at):
        return SURVEY_CLOSED
    if survey.status == "draft":
        return SURVEY_DRAFT if invitation.expires_at <= now else _HOLD
    return None


async def send_due_invitations(session: AsyncSession, settings: CEMSettings, limit: int) -> Sending:
    """Send the scheduled invitations whose time has come (a link each, `survey.invited`). One
    whose customer opted out or was erased meanwhile is cancelled and recorded as suppressed.
    One whose survey closed meanwhile (or passed its `closes_at`) is cancelled (`survey_closed`);
    one whose survey is back in draft waits for it to be active again (see `_survey_verdict`).
    These are not suppressions by a rule, so they are neither stored as one nor announced; nor
    is their cancellation, as they were never announced."""
    now = utcnow()
    due = await InvitationRepository(session).claim_due(now, limit)
    result = Sending()
    if not due:
        return result
    profiles = await CustomerProfileRepository(session).by_ids({i.customer_id for i in due if i.customer_id})
    surveys = {s.id: s for s in await SurveyRepository(session).by_ids({i.survey_id for i in due})}
    suppressions: list[dict[str, Any]] = []
    ttl = dt.timedelta(days=settings.invitation_ttl_days)
    for invitation in due:
        survey = surveys[invitation.survey_id]
        profile = profiles.get(invitation.customer_id) if invitation.customer_id else None
        reason = None
        if profile is not None and profile.erased_at is not None:
            reason = "erased"
        elif profile is not None and profile.survey_opt_out:
            reason = "opted_out"
        stopped = _survey_verdict(survey, invitation, now) if reason is None else None
        if stopped == _HOLD:
            continue  # went back to draft since it was claimed
        if stopped is not None:
            invitation.cancelled_at = now
            invitation.cancel_reason = stopped
            result.cancelled += 1
            continue
        if reason is not None:
            invitation.cancelled_at = now
            invitation.cancel_reason = reason
            suppressions.append(
                {
                    "id": new_id(),
                    "survey_id": invitation.survey_id,
                    "customer_id": invitation.customer_id,
                    "email": None,
                    "email_lower": None,
                    "interaction_id": None,
                    "invitation_id": invitation.id,
                    "touchpoint": invitation.touchpoint,
                    "origin": "schedule",
                    "reason": reason,
                    "created_at": now,
                }
            )
            result.cancelled += 1
            continue
        if survey.activated_at is not None and survey.activated_at > invitation.send_at:
            # Held while the survey was a draft: it was due only once the survey was active again,
            # and the throttle, fatigue and recurrence count it from then, not from weeks before.
            invitation.send_at = survey.activated_at
        token, invitation.token_hash = new_link()
        invitation.sent_at = now
        invitation.expires_at = now + ttl
        row = {c.key: getattr(invitation, c.key) for c in invitation.__table__.columns}
        address = invitation.email or (profile.email if profile else None)
        announce_invitation(session, row, survey, respondent_url(settings, token), address)
        result.sent += 1
    await session.flush()
    for row in await _stored(session, suppressions):
        announce_suppression(session, row)
    return result


async def _stored(session: AsyncSession, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    inserted = await SuppressionRepository(session).insert_new(rows)
    return [r for r in rows if r["id"] in inserted]
