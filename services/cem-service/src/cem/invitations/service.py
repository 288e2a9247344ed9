"""Invitation rules: only for active surveys, never to customers who opted out, one link each
with 256 random bits whose hash alone is stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.config import CEMSettings
from cem.customers.models import CustomerProfile, email_key
from cem.customers.repository import CustomerProfileRepository
from cem.db import SOURCE, OutboxMessage
from cem.invitations.models import Invitation
from cem.invitations.repository import NEWEST_FIRST, InvitationRepository
from cem.invitations.schemas import InvitationCreate, InvitationCreated, InvitationRead
from cem.suppressions.repository import OptOutRepository
from cem.surveys.models import Survey
from cem.surveys.service import get_survey
from cem.touchpoints.repository import TouchpointRepository
from cxkit import keyset
from cxkit.db import lock_keys, new_id, utcnow
from cxkit.events.payloads import SurveyInvitationCancelled, SurveyInvited, SurveyOptedIn, SurveyOptedOut
from cxkit.http.batch import InvalidItem, invalid_item_problem, item_problem
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, field_problem
from cxkit.kafka.outbox import add_event


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def status_of(invitation: Invitation, now: dt.datetime | None = None) -> str:
    if invitation.cancelled_at is not None:
        return "cancelled"
    if invitation.answered_at is not None:
        return "answered"
    if invitation.sent_at is None:
        return "scheduled"
    if invitation.expires_at <= (now or utcnow()):
        return "expired"
    return "opened" if invitation.opened_at is not None else "sent"


def to_read(invitation: Invitation, now: dt.datetime | None = None) -> InvitationRead:
    return InvitationRead(
        id=invitation.id,
        survey_id=invitation.survey_id,
        customer_id=invitation.customer_id,
        email=invitation.email,
        touchpoint=invitation.touchpoint,
        channel=invitation.channel,
        origin=invitation.origin,
        interaction_id=invitation.interaction_id,
        status=status_of(invitation, now),  # type: ignore[arg-type]
        created_at=invitation.created_at,
        send_at=invitation.send_at,
        sent_at=invitation.sent_at,
        expires_at=invitation.expires_at,
        opened_at=invitation.opened_at,
        answered_at=invitation.answered_at,
        cancelled_at=invitation.cancelled_at,
        cancel_reason=invitation.cancel_reason,
        reminders_sent=invitation.reminders_sent,
        last_reminded_at=invitation.last_reminded_at,
    )


def new_link() -> tuple[str, str]:
    """(token, its hash): 256 random bits, URL-safe; only the hash is stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def announce_invitation(session: AsyncSession, row: dict[str, Any], survey: Survey, url: str, email: str | None) -> None:
    """`survey.invited` for an invitation `row` (its column values), keyed by the customer (or by
    nobody for a bare address), with the link."""
    add_event(
        session,
        OutboxMessage,
        "survey.invited",
        source=SOURCE,
        subject=row["customer_id"],
        data=SurveyInvited(
            invitation_id=row["id"],
            survey_id=survey.id,
            survey_name=survey.name,
            survey_kind=survey.kind,
            customer_id=row["customer_id"],
            touchpoint=row["touchpoint"],
            url=url,
            unsubscribe_url=unsubscribe_url(url),
            expires_at=row["expires_at"],
            email=email,
            channel=row["channel"],
            language=survey.language,
        ),
    )


def columns_of(invitation: Invitation) -> dict[str, Any]:
    return {c.key: getattr(invitation, c.key) for c in Invitation.__table__.columns}


def respondent_url(settings: CEMSettings, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/r/{token}"


def unsubscribe_url(url: str) -> str:
    """Where the recipient of the link `url` asks for no more surveys (`/r/{token}/unsubscribe`)."""
    return f"{url}/unsubscribe"


def ensure_open_for_answers(survey: Survey) -> None:
    reason = survey.closed_reason(utcnow())
    if reason is not None:
        state = reason.removeprefix("survey_")
        raise Conflict(f"survey {survey.name!r} is {state}; only an active survey takes invitations and answers")


async def resolve_recipient(
    session: AsyncSession, customer_id: uuid.UUID | None, email: str | None
) -> tuple[CustomerProfile | None, str | None]:
    """The customer profile behind `customer_id` (422 if unknown; a merged duplicate's survivor)
    or behind `email` (None when the address belongs to nobody we know, or when neither is
    given), and the email to keep. The profile is held until the transaction ends
    (`CustomerProfileRepository.hold`): an erasure or a merge of the customer under way is
    waited for, and one that comes later waits for this write, so what it writes for them is
    never missed by either."""
    profiles = CustomerProfileRepository(session)
    if customer_id is not None:
        profile = await profiles.hold_survivor(await profiles.hold(customer_id))
        if profile is None:
            raise field_problem(
                ["body", "customer_id"], f"customer {customer_id} is not known here (the CRM has not announced it)"
            )
        return profile, email
    if email is None:
        return None, None
    # The customer consumer takes the same lock before it announces an address: either this
    # transaction sees the customer, or that one sees what this one keeps under the address
    # (and links it).
    await lock_keys(session, "email", [email_key(email)])
    key = email_key(email)
    return (await profiles.by_emails([key], hold=True)).get(key), email


def _never_invited(profile: CustomerProfile | None, address: str | None = None, opted_out: Collection[str] = ()) -> str | None:
    """Why this customer or address is never invited (erased, opted out; `opted_out` holds the
    lower-cased addresses that asked for no more surveys), or None."""
    if profile is not None and profile.erased_at is not None:
        return f"customer {profile.id} was erased; they are never invited again"
    if profile is not None and profile.survey_opt_out:
        return f"customer {profile.id} opted out of surveys; they are never invited"
    if address is not None and email_key(address) in opted_out:
        return f"{address} asked for no more surveys; it is never invited"
    return None


def _address_of(profile: CustomerProfile | None, email: str | None) -> str | None:
    """The address an invitation goes to: the one given, else the customer's."""
    return email or (profile.email if profile is not None else None)


async def _opted_out(session: AsyncSession, addresses: Iterable[str | None]) -> set[str]:
    return await OptOutRepository(session).opted_out({email_key(a) for a in addresses if a})


def _new_invitation(
    survey: Survey,
    data: InvitationCreate,
    profile: CustomerProfile | None,
    email: str | None,
    settings: CEMSettings,
    now: dt.datetime,
) -> tuple[Invitation, str]:
    """A sent invitation made by a request (not throttled), and its link's token."""
    token, token_hash = new_link()
    invitation = Invitation(
        id=new_id(),
        survey_id=survey.id,
        customer_id=profile.id if profile else None,
        email=email,
        email_lower=email_key(email) if email else None,
        token_hash=token_hash,
        touchpoint=data.touchpoint or survey.touchpoint,
        channel=data.channel,
        origin="api",
        created_at=now,
        send_at=now,
        sent_at=now,
        expires_at=now + dt.timedelta(days=data.expires_in_days or settings.invitation_ttl_days),
    )
    return invitation, token


def _announce_made(
    session: AsyncSession,
    invitation: Invitation,
    token: str,
    survey: Survey,
    profile: CustomerProfile | None,
    settings: CEMSettings,
    now: dt.datetime,
) -> InvitationCreated:
    url = respondent_url(settings, token)
    announce_invitation(session, columns_of(invitation), survey, url, invitation.email or (profile.email if profile else None))
    return InvitationCreated(**to_read(invitation, now).model_dump(), token=token, url=url, unsubscribe_url=unsubscribe_url(url))


async def create_invitation(
    session: AsyncSession, survey_id: uuid.UUID, data: InvitationCreate, settings: CEMSettings
) -> InvitationCreated:
    survey = await get_survey(session, survey_id)
    ensure_open_for_answers(survey)
    profile, email = await resolve_recipient(session, data.customer_id, str(data.email) if data.email else None)
    address = _address_of(profile, email)
    if refusal := _never_invited(profile, address, await _opted_out(session, [address])):
        raise Conflict(refusal)
    if data.touchpoint and not await TouchpointRepository(session).existing_keys([data.touchpoint]):
        raise field_problem(["body", "touchpoint"], f"no touchpoint with key {data.touchpoint!r}")
    now = utcnow()
    invitation, token = _new_invitation(survey, data, profile, email, settings, now)
    repo = InvitationRepository(session)
    repo.add(invitation)
    await repo.flush()
    return _announce_made(session, invitation, token, survey, profile, settings, now)


async def create_invitations(
    session: AsyncSession, survey_id: uuid.UUID, items: Sequence[InvitationCreate | InvalidItem], settings: CEMSettings
) -> list[dict[str, Any]]:
    """Invite each item's recipient to the survey, as `create_invitation` would, in one
    transaction and a handful of statements whatever the batch's size: one result per item, in
    order, `created` (with the invitation and its link) or `error` (with the problem a single
    request would have answered). An item repeating an earlier item's recipient is refused (409)."""
    survey = await get_survey(session, survey_id)
    ensure_open_for_answers(survey)
    valid = [item for item in items if not isinstance(item, InvalidItem)]
    profiles = CustomerProfileRepository(session)
    # Held as resolve_recipient holds them: an erasure or a merge under way is waited for.
    by_id = await profiles.by_ids({item.customer_id for item in valid if item.customer_id is not None}, hold=True)
    by_id |= await profiles.by_ids({p.merged_into for p in by_id.values() if p.merged_into is not None} - by_id.keys(), hold=True)
    emails = {email_key(str(item.email)) for item in valid if item.customer_id is None and item.email is not None}
    await lock_keys(session, "email", emails)  # as resolve_recipient: the customer consumer links what it missed
    by_email = await profiles.by_emails(emails, hold=True)
    touchpoints = await TouchpointRepository(session).existing_keys([item.touchpoint for item in valid if item.touchpoint])
    addresses = [str(item.email) if item.email is not None else None for item in valid]
    opted_out = await _opted_out(session, addresses + [p.email for p in (*by_id.values(), *by_email.values())])

    results: list[dict[str, Any]] = [{} for _ in items]
    first_of: dict[tuple[str, Any], int] = {}
    made: list[tuple[int, Invitation, str, CustomerProfile | None]] = []
    now = utcnow()
    for i, item in enumerate(items):
        if isinstance(item, InvalidItem):
            results[i] = {"status": "error", "problem": invalid_item_problem(item)}
            continue
        problem, profile, email = _batch_recipient(item, by_id, by_email, touchpoints, opted_out)
        if problem is None:
            key = ("customer", profile.id) if profile is not None else ("email", email_key(email or ""))
            if key in first_of:
                field = "customer_id" if item.customer_id is not None else "email"
                problem = item_problem(
                    409,
                    f"repeats the recipient of item {first_of[key]} of this batch; only that one is invited",
                    [{"loc": [field], "msg": "repeated in this batch", "type": "duplicate"}],
                )
            first_of.setdefault(key, i)
        if problem is not None:
            results[i] = {"status": "error", "problem": problem}
            continue
        invitation, token = _new_invitation(survey, item, profile, email, settings, now)
        made.append((i, invitation, token, profile))
    if made:
        session.add_all([invitation for _, invitation, _, _ in made])
        await session.flush()  # one multi-row insert
    for i, invitation, token, profile in made:
        created = _announce_made(session, invitation, token, survey, profile, settings, now)
        results[i] = {"status": "created", "invitation": created}
    return results


def _batch_recipient(
    item: InvitationCreate,
    by_id: dict[uuid.UUID, CustomerProfile],
    by_email: dict[str, CustomerProfile],
    touchpoints: set[str],
    opted_out: set[str],
) -> tuple[dict[str, Any] | None, CustomerProfile | None, str | None]:
    """(the item's problem or None, the customer invited, the address kept), from what the batch looked up."""
    email = str(item.email) if item.email is not None else None
    if item.customer_id is not None:
        profile = by_id.get(item.customer_id)
        if profile is not None and profile.merged_into is not None:
            profile = by_id.get(profile.merged_into)
        if profile is None:
            detail = f"customer {item.customer_id} is not known here (the CRM has not announced it)"
            return item_problem(422, detail, [{"loc": ["customer_id"], "msg": detail, "type": "reference"}]), None, None
    else:
        profile = by_email.get(email_key(email)) if email else None
    if refusal := _never_invited(profile, _address_of(profile, email), opted_out):
        return item_problem(409, refusal), None, None
    if item.touchpoint and item.touchpoint not in touchpoints:
        detail = f"no touchpoint with key {item.touchpoint!r}"
        return item_problem(422, detail, [{"loc": ["touchpoint"], "msg": detail, "type": "reference"}]), None, None
    return None, profile, email


async def get_invitation(session: AsyncSession, invitation_id: uuid.UUID) -> Invitation:
    invitation = await InvitationRepository(session).get(invitation_id)
    if invitation is None:
        raise NotFound(f"invitation {invitation_id} does not exist")
    return invitation


CANCELLED_BY_REQUEST = "by_request"


async def cancel_invitation(session: AsyncSession, invitation_id: uuid.UUID) -> Invitation:
    """Withdraw an invitation not answered yet: a scheduled one is never sent, a sent one's links
    (its own and its reminders') stop taking answers, and it is reminded no more. Cancelling a
    cancelled invitation changes nothing; an answered one is a 409."""
    cancelled = await InvitationRepository(session).cancel(invitation_id, utcnow(), CANCELLED_BY_REQUEST)
    invitation = await get_invitation(session, invitation_id)  # read after the update: as it is now
    if not cancelled and invitation.cancelled_at is None:
        raise Conflict(f"invitation {invitation_id} was already answered", reason="already_answered")
    if cancelled and invitation.sent_at is not None:
        await announce_cancellation(session, invitation)
    return invitation


async def announce_cancellation(session: AsyncSession, invitation: Invitation) -> None:
    """`survey.invitation_cancelled` for a sent invitation just withdrawn (a scheduled one was
    never announced, so its withdrawal is not either), in the same transaction."""
    assert invitation.sent_at is not None and invitation.cancelled_at is not None and invitation.cancel_reason
    survey = await get_survey(session, invitation.survey_id)
    profile = await CustomerProfileRepository(session).get(invitation.customer_id) if invitation.customer_id else None
    add_event(
        session,
        OutboxMessage,
        "survey.invitation_cancelled",
        source=SOURCE,
        subject=invitation.customer_id,
        data=SurveyInvitationCancelled(
            invitation_id=invitation.id,
            survey_id=survey.id,
            survey_name=survey.name,
            survey_kind=survey.kind,
            customer_id=invitation.customer_id,
            email=invitation.email or (profile.email if profile else None),
            touchpoint=invitation.touchpoint,
            channel=invitation.channel,
            reason=invitation.cancel_reason,
            sent_at=invitation.sent_at,
            cancelled_at=invitation.cancelled_at,
        ),
    )


async def list_invitations(
    session: AsyncSession,
    page: PageParams,
    *,
    survey_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    status: str | None,
) -> tuple[list[InvitationRead], str | None]:
    await get_survey(session, survey_id)
    now = utcnow()
    rows = await InvitationRepository(session).list_page(
        survey_id=survey_id, customer_id=customer_id, status=status, now=now, page=page
    )
    rows, next_cursor = keyset.cut(rows, NEWEST_FIRST, page)
    return [to_read(r, now) for r in rows], next_cursor


OPTED_OUT = "opted_out"


@dataclass(frozen=True)
class _Recipient:
    """Whom an invitation went to, as they are now: the customer (a merged duplicate's survivor),
    their address, and the fields every opt-out and opt-in event says of the invitation."""

    profile: CustomerProfile | None
    address: str | None
    about: dict[str, Any]

    @property
    def customer_id(self) -> uuid.UUID | None:
        return self.profile.id if self.profile is not None else None

    @property
    def email_lower(self) -> str | None:
        return email_key(self.address) if self.address else None


async def _recipient_of(session: AsyncSession, invitation: Invitation, survey: Survey) -> _Recipient:
    """The invitation's recipient, with their address's lock taken (as every invitation is made)."""
    profiles = CustomerProfileRepository(session)
    profile = await profiles.get(invitation.customer_id) if invitation.customer_id else None
    if profile is not None and profile.merged_into is not None:
        profile = await profiles.get(profile.merged_into)
    address = _address_of(profile, invitation.email)
    if address:
        await lock_keys(session, "email", [email_key(address)])
    about = {
        "invitation_id": invitation.id,
        "survey_id": survey.id,
        "survey_name": survey.name,
        "survey_kind": survey.kind,
        "customer_id": profile.id if profile else None,
        "email": address,
        "touchpoint": invitation.touchpoint,
        "channel": invitation.channel,
    }
    return _Recipient(profile, address, about)


async def opt_out(session: AsyncSession, invitation: Invitation, survey: Survey) -> bool:
    """The recipient of `invitation` asks for no more surveys (from any of its links, answered,
    expired or withdrawn ones too): their address is kept (as its hash) and their customer
    marked, so neither is invited again (the throttle's suppressions say `opted_out`); their
    open invitations are withdrawn (scheduled ones are never sent); `survey.opted_out`
    announces it, for the CRM and for whatever sends survey mail. False when they had opted out
    already: nothing changes."""
    recipient = await _recipient_of(session, invitation, survey)
    profile = recipient.profile
    if recipient.address is None and (profile is None or profile.opted_out_at is not None):
        return False
    now = utcnow()
    recorded = await OptOutRepository(session).record(
        email=recipient.address, customer_id=recipient.customer_id, survey_id=survey.id, invitation_id=invitation.id, now=now
    )
    marked = profile is not None and await CustomerProfileRepository(session).mark_opted_out(profile.id, now)
    if not (marked or (recorded and profile is None)):
        return False  # the customer, or the bare address, had opted out already
    cancelled = await InvitationRepository(session).cancel_open_of(recipient.customer_id, recipient.email_lower, now, OPTED_OUT)
    for withdrawn in cancelled:
        if withdrawn.sent_at is not None:
            await announce_cancellation(session, withdrawn)
    data = SurveyOptedOut(**recipient.about, opted_out_at=now, cancelled_invitations=len(cancelled))
    add_event(session, OutboxMessage, "survey.opted_out", source=SOURCE, subject=recipient.customer_id, data=data)
    return True


async def opt_in(session: AsyncSession, invitation: Invitation, survey: Survey) -> bool:
    """The recipient of `invitation`, who had opted out, asks for surveys again (their own
    request: nobody else can undo an opt-out): the address's and the customer's opt-outs go,
    the customer's `survey_opt_out` is cleared here, and `survey.opted_in` asks the CRM to clear
    it too. What was withdrawn stays withdrawn. False when they had not opted out: nothing
    changes."""
    recipient = await _recipient_of(session, invitation, survey)
    removed = await OptOutRepository(session).remove(email=recipient.address, customer_id=recipient.customer_id)
    profiles = CustomerProfileRepository(session)
    cleared = recipient.customer_id is not None and await profiles.mark_opted_out(recipient.customer_id, None)
    if not (removed or cleared):
        return False
    data = SurveyOptedIn(**recipient.about, opted_in_at=utcnow())
    add_event(session, OutboxMessage, "survey.opted_in", source=SOURCE, subject=recipient.customer_id, data=data)
    return True
