"""Every invitation query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from cem.customers.lifecycle import CustomerErasure
from cem.customers.models import CustomerProfile
from cem.customers.repository import announced_customer_with
from cem.invitations.models import Invitation, InvitationLink
from cem.surveys.models import Survey
from cxkit import keyset
from cxkit.db import any_of, insert_new
from cxkit.http.pagination import PageParams
from cxkit.repository import Repository

NEWEST_FIRST = keyset.Sort(keyset.SortKey("created_at", Invitation.created_at, "datetime"), descending=True)


def status_condition(status: str, now: dt.datetime) -> ColumnElement[bool]:
    """The SQL condition of a derived invitation status (see `service.status_of`)."""
    if status == "cancelled":
        return Invitation.cancelled_at.is_not(None)
    live = Invitation.cancelled_at.is_(None)
    if status == "answered":
        return and_(live, Invitation.answered_at.is_not(None))
    if status == "scheduled":
        return and_(live, Invitation.answered_at.is_(None), Invitation.sent_at.is_(None))
    sent = and_(live, Invitation.answered_at.is_(None), Invitation.sent_at.is_not(None))
    if status == "expired":
        return and_(sent, Invitation.expires_at <= now)
    open_ = and_(sent, Invitation.expires_at > now)
    if status == "opened":
        return and_(open_, Invitation.opened_at.is_not(None))
    return and_(open_, Invitation.opened_at.is_(None))


def _reached_or_due() -> ColumnElement[bool]:
    """An invitation that went out (whether or not it was cancelled afterwards: it reached the
    recipient) or is still due to: what counts as a send for the throttle and fatigue rules."""
    return or_(Invitation.sent_at.is_not(None), Invitation.cancelled_at.is_(None))


class InvitationRepository(Repository[Invitation]):
    model = Invitation

    async def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        """The invitation behind a link: its first (`token_hash`), else one a reminder handed out."""
        invitation = await self.session.scalar(select(Invitation).where(Invitation.token_hash == token_hash))
        if invitation is None:
            invitation = await self.session.scalar(
                select(Invitation).join(InvitationLink).where(InvitationLink.token_hash == token_hash)
            )
        return invitation

    async def add_links(self, links: Sequence[dict[str, Any]]) -> None:
        """Store further links (`InvitationLink` column values) to invitations."""
        if links:
            await self.session.execute(insert(InvitationLink), list(links))

    async def open_for(self, survey_id: uuid.UUID, customer_id: uuid.UUID, now: dt.datetime) -> Invitation | None:
        """The customer's newest unanswered, unexpired invitation to the survey."""
        stmt = (
            select(Invitation)
            .where(
                Invitation.survey_id == survey_id,
                Invitation.customer_id == customer_id,
                Invitation.answered_at.is_(None),
                Invitation.sent_at.is_not(None),
                Invitation.cancelled_at.is_(None),
                Invitation.expires_at > now,
            )
            .order_by(Invitation.created_at.desc())
            .limit(1)
        )
        return await self.session.scalar(stmt)

    async def list_page(
        self,
        *,
        survey_id: uuid.UUID | None = None,
        customer_id: uuid.UUID | None = None,
        status: str | None = None,
        now: dt.datetime,
        page: PageParams,
    ) -> list[Invitation]:
        """Newest first, keyset on (created_at, id); one row more than a page."""
        stmt = select(Invitation)
        if survey_id is not None:
            stmt = stmt.where(Invitation.survey_id == survey_id)
        if customer_id is not None:
            stmt = stmt.where(Invitation.customer_id == customer_id)
        if status is not None:
            stmt = stmt.where(status_condition(status, now))
        stmt = keyset.apply(stmt, NEWEST_FIRST, Invitation.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def mark_opened(self, invitation_id: uuid.UUID, now: dt.datetime) -> None:
        await self.session.execute(
            update(Invitation).where(Invitation.id == invitation_id, Invitation.opened_at.is_(None)).values(opened_at=now)
        )

    async def claim_for_answer(self, invitation_id: uuid.UUID, now: dt.datetime) -> bool:
        """Mark the invitation answered unless it already is (or was cancelled). Concurrent
        claims and a cancel queue on the row lock and only the first one wins, so an invitation
        is answered once, and never after it was cancelled."""
        result = await self.session.execute(
            update(Invitation)
            .where(Invitation.id == invitation_id, Invitation.answered_at.is_(None), Invitation.cancelled_at.is_(None))
            .values(answered_at=now)
            .returning(Invitation.id)
        )
        return result.first() is not None

    async def cancel(self, invitation_id: uuid.UUID, now: dt.datetime, reason: str) -> bool:
        """Cancel the invitation unless it is answered or cancelled already; whether it was."""
        result = await self.session.execute(
            update(Invitation)
            .where(Invitation.id == invitation_id, Invitation.answered_at.is_(None), Invitation.cancelled_at.is_(None))
            .values(cancelled_at=now, cancel_reason=reason)
            .returning(Invitation.id)
            .execution_options(synchronize_session=False)
        )
        return result.first() is not None

    async def cancel_open_of(
        self, customer_id: uuid.UUID | None, email_lower: str | None, now: dt.datetime, reason: str
    ) -> list[Invitation]:
        """Cancel every invitation of the customer or to the address that is neither answered,
        cancelled nor expired (scheduled ones too); returns those it cancelled."""
        recipients = []
        if customer_id is not None:
            recipients.append(Invitation.customer_id == customer_id)
        if email_lower:
            recipients.append(Invitation.email_lower == email_lower)
        if not recipients:
            return []
        stmt = (
            update(Invitation)
            .where(
                or_(*recipients),
                Invitation.answered_at.is_(None),
                Invitation.cancelled_at.is_(None),
                Invitation.expires_at > now,
            )
            .values(cancelled_at=now, cancel_reason=reason)
            .returning(Invitation)
            .execution_options(synchronize_session=False)
        )
        query = select(Invitation).from_statement(stmt).execution_options(populate_existing=True)
        return list((await self.session.scalars(query)).all())

    async def recent_sends(
        self, customer_ids: Collection[uuid.UUID], emails_lower: Collection[str], since: dt.datetime
    ) -> list[tuple[uuid.UUID, uuid.UUID | None, str | None, dt.datetime]]:
        """(survey_id, customer_id, email_lower, send_at) of the invitations to these customers or
        addresses that went out (or are due) after `since`: what the throttle and fatigue rules
        count. One cancelled after it went out counts (it reached the recipient); one cancelled
        before does not."""
        conditions = []
        if customer_ids:
            conditions.append(any_of(Invitation.customer_id, set(customer_ids)))
        if emails_lower:
            conditions.append(any_of(Invitation.email_lower, set(emails_lower)))
        if not conditions:
            return []
        stmt = select(Invitation.survey_id, Invitation.customer_id, Invitation.email_lower, Invitation.send_at).where(
            or_(*conditions), Invitation.send_at > since, _reached_or_due()
        )
        return [(r[0], r[1], r[2], r[3]) for r in (await self.session.execute(stmt)).all()]

    async def insert_new(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Insert invitations, skipping any whose (survey, interaction) already has one; returns the ids inserted."""
        return await insert_new(self.session, Invitation.__table__, rows, "id")

    async def claim_due(self, now: dt.datetime, limit: int) -> list[Invitation]:
        """Scheduled invitations whose time has come, oldest first, locked so that two schedulers
        never send one twice (SKIP LOCKED passes over rows another transaction holds). Those a
        draft survey holds are passed over: they wait until it is active again, unless the
        survey's `closes_at` or their own `expires_at` has passed (then they are claimed, to be
        cancelled)."""
        held = and_(
            Survey.status == "draft",
            Invitation.expires_at > now,
            or_(Survey.closes_at.is_(None), Survey.closes_at > now),
        )
        stmt = (
            select(Invitation)
            .join(Survey, Survey.id == Invitation.survey_id)
            .where(
                Invitation.sent_at.is_(None),
                Invitation.send_at <= now,
                Invitation.cancelled_at.is_(None),
                Invitation.answered_at.is_(None),
                ~held,
            )
            .order_by(Invitation.send_at, Invitation.id)
            .limit(limit)
            .with_for_update(of=Invitation, skip_locked=True)
        )
        return list((await self.session.scalars(stmt)).all())

    async def claim_reminders_due(
        self, survey_id: uuid.UUID, max_reminders: int, judged_before: dt.datetime, now: dt.datetime, limit: int
    ) -> list[Invitation]:
        """The survey's invitations a reminder is due to: out, not answered, cancelled or expired,
        fewer than `max_reminders` sent, and last judged (or sent) before `judged_before`; never
        one of a customer who opted out or was erased. Locked with SKIP LOCKED, so two
        schedulers never remind one twice."""
        stopped = exists().where(
            CustomerProfile.id == Invitation.customer_id,
            or_(CustomerProfile.erased_at.is_not(None), CustomerProfile.survey_opt_out.is_(True)),
        )
        stmt = (
            select(Invitation)
            .where(
                Invitation.survey_id == survey_id,
                Invitation.sent_at.is_not(None),
                Invitation.answered_at.is_(None),
                Invitation.cancelled_at.is_(None),
                Invitation.expires_at > now,
                Invitation.reminders_sent < max_reminders,
                func.coalesce(Invitation.reminder_judged_at, Invitation.sent_at) <= judged_before,
                ~stopped,
            )
            .order_by(Invitation.id)
            .limit(limit)
            .with_for_update(of=Invitation, skip_locked=True)
        )
        return list((await self.session.scalars(stmt)).all())

    async def recently_contacted(
        self, customer_ids: Collection[uuid.UUID], emails_lower: Collection[str], since: dt.datetime
    ) -> list[tuple[uuid.UUID, uuid.UUID | None, str | None]]:
        """(invitation id, customer_id, email_lower) of invitations to these recipients sent (or
        due) or reminded after `since`: what the fatigue rule counts against a reminder. As for
        `recent_sends`, one cancelled after it went out counts; one cancelled before does not."""
        conditions = []
        if customer_ids:
            conditions.append(any_of(Invitation.customer_id, set(customer_ids)))
        if emails_lower:
            conditions.append(any_of(Invitation.email_lower, set(emails_lower)))
        if not conditions:
            return []
        stmt = select(Invitation.id, Invitation.customer_id, Invitation.email_lower).where(
            or_(*conditions),
            or_(Invitation.send_at > since, Invitation.last_reminded_at > since),
            _reached_or_due(),
        )
        return [(r[0], r[1], r[2]) for r in (await self.session.execute(stmt)).all()]

    async def link_emails(self, emails_lower: Collection[str]) -> None:
        """Invitations to an address nobody was known by go to the customer now announced with it."""
        if emails_lower:
            await self.session.execute(
                update(Invitation)
                .where(Invitation.customer_id.is_(None), any_of(Invitation.email_lower, set(emails_lower)))
                .values(customer_id=announced_customer_with(Invitation.email_lower))
                .execution_options(synchronize_session=False)
            )

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Invitation)
            .where(Invitation.customer_id == duplicate_id)
            .values(customer_id=survivor_id)
            .execution_options(synchronize_session=False)
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """Drop the addresses of an erased customer's invitations and cancel the ones not sent
        yet. Those with an address may have been made to it before the CRM announced them
        (linked now, or when it did): their events carry no key, and their ids join
        `erasure.unkeyed_ids`."""
        customer_id = erasure.customer_id
        if erasure.email_lower:
            await self.session.execute(
                update(Invitation)
                .where(Invitation.customer_id.is_(None), Invitation.email_lower == erasure.email_lower)
                .values(customer_id=customer_id)
                .execution_options(synchronize_session=False)
            )
        await self.session.execute(
            update(Invitation)
            .where(Invitation.customer_id == customer_id, Invitation.sent_at.is_(None), Invitation.cancelled_at.is_(None))
            .values(cancelled_at=erasure.at, cancel_reason="erased")
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(
            update(Invitation)
            .where(Invitation.customer_id == customer_id, Invitation.email.is_not(None))
            .values(email=None, email_lower=None)
            .returning(Invitation.id)
            .execution_options(synchronize_session=False)
        )
        erasure.unkeyed_ids.extend(result.scalars().all())
