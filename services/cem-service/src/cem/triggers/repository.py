"""Every query of the invitation rules: suppressions, surveys that trigger, customers due again."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import func, literal, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.lifecycle import CustomerErasure
from cem.customers.models import CustomerProfile
from cem.customers.repository import announced_customer_with
from cem.invitations.models import Invitation
from cem.surveys.models import Survey
from cem.triggers.models import Suppression, throttled_event_id
from cxkit import keyset
from cxkit.db import insert_new
from cxkit.http.pagination import PageParams

NEWEST_FIRST = keyset.Sort(keyset.SortKey("created_at", Suppression.created_at, "datetime"), descending=True)


class SuppressionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_new(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Insert suppressions, skipping any whose (survey, interaction) was judged already; returns the ids inserted."""
        return await insert_new(self.session, Suppression.__table__, rows, "id")

    async def recent(
        self, customer_ids: Collection[uuid.UUID], emails_lower: Collection[str], since: dt.datetime
    ) -> list[tuple[uuid.UUID, uuid.UUID | None, str | None, dt.datetime]]:
        """(survey_id, customer_id, email_lower, created_at) of suppressions of these recipients after `since`."""
        conditions = []
        if customer_ids:
            conditions.append(Suppression.customer_id.in_(set(customer_ids)))
        if emails_lower:
            conditions.append(Suppression.email_lower.in_(set(emails_lower)))
        if not conditions:
            return []
        stmt = select(Suppression.survey_id, Suppression.customer_id, Suppression.email_lower, Suppression.created_at).where(
            or_(*conditions), Suppression.created_at > since
        )
        return [(r[0], r[1], r[2], r[3]) for r in (await self.session.execute(stmt)).all()]

    async def list_page(
        self,
        *,
        survey_id: uuid.UUID | None,
        customer_id: uuid.UUID | None,
        reason: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        page: PageParams,
    ) -> list[Suppression]:
        """Newest first, keyset on (created_at, id); one row more than a page."""
        stmt = select(Suppression)
        if survey_id is not None:
            stmt = stmt.where(Suppression.survey_id == survey_id)
        if customer_id is not None:
            stmt = stmt.where(Suppression.customer_id == customer_id)
        if reason is not None:
            stmt = stmt.where(Suppression.reason == reason)
        stmt = keyset.apply(keyset.within(stmt, Suppression.created_at, since, until), NEWEST_FIRST, Suppression.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def counts_by_reason(
        self,
        *,
        survey_id: uuid.UUID | None,
        touchpoint: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
    ) -> dict[str, int]:
        stmt = select(Suppression.reason, func.count()).group_by(Suppression.reason)
        if survey_id is not None:
            stmt = stmt.where(Suppression.survey_id == survey_id)
        if touchpoint is not None:
            stmt = stmt.where(Suppression.touchpoint == touchpoint)
        if since is not None:
            stmt = stmt.where(Suppression.created_at >= since)
        if until is not None:
            stmt = stmt.where(Suppression.created_at < until)
        return {reason: int(n) for reason, n in (await self.session.execute(stmt)).all()}

    async def link_emails(self, emails_lower: Collection[str]) -> None:
        if emails_lower:
            await self.session.execute(
                update(Suppression)
                .where(Suppression.customer_id.is_(None), Suppression.email_lower.in_(set(emails_lower)))
                .values(customer_id=announced_customer_with(Suppression.email_lower))
                .execution_options(synchronize_session=False)
            )

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Suppression)
            .where(Suppression.customer_id == duplicate_id)
            .values(customer_id=survivor_id)
            .execution_options(synchronize_session=False)
        )

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        """An erased customer's suppressions keep their survey, reason and time; the address goes.
        Those that have one were made under it before the CRM announced the customer (linked
        now, or when it did): their events carry it and no key, and join `erasure.unkeyed_ids`
        by their event ids."""
        if erasure.email_lower:
            await self.session.execute(
                update(Suppression)
                .where(Suppression.customer_id.is_(None), Suppression.email_lower == erasure.email_lower)
                .values(customer_id=erasure.customer_id)
                .execution_options(synchronize_session=False)
            )
        result = await self.session.execute(
            update(Suppression)
            .where(Suppression.customer_id == erasure.customer_id, Suppression.email.is_not(None))
            .values(email=None, email_lower=None)
            .returning(Suppression.id)
            .execution_options(synchronize_session=False)
        )
        erasure.unkeyed_ids.extend(throttled_event_id(i) for i in result.scalars().all())


class TriggerRepository:
    """Which surveys an interaction or a date sends."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def active_triggered_by(self, interaction_types: Collection[str]) -> list[Survey]:
        if not interaction_types:
            return []
        stmt = (
            select(Survey)
            .where(Survey.status == "active", Survey.trigger_interaction_type.in_(set(interaction_types)))
            .order_by(Survey.created_at, Survey.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def active_recurring(self) -> list[uuid.UUID]:
        stmt = (
            select(Survey.id)
            .where(Survey.status == "active", Survey.recurrence_days.is_not(None))
            .order_by(Survey.created_at, Survey.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def judged(self, interaction_ids: Collection[uuid.UUID]) -> set[tuple[uuid.UUID, uuid.UUID]]:
        """(survey, interaction) pairs that already made an invitation or a suppression."""
        if not interaction_ids:
            return set()
        ids = set(interaction_ids)
        invited = select(Invitation.survey_id, Invitation.interaction_id).where(Invitation.interaction_id.in_(ids))
        suppressed = select(Suppression.survey_id, Suppression.interaction_id).where(Suppression.interaction_id.in_(ids))
        return {(r[0], r[1]) for r in (await self.session.execute(union_all(invited, suppressed))).all()}

    async def lock_survey(self, survey_id: uuid.UUID) -> Survey | None:
        """The survey, locked for this transaction; None if another scheduler holds it or it is
        no longer active."""
        stmt = select(Survey).where(Survey.id == survey_id, Survey.status == "active").with_for_update(skip_locked=True)
        return await self.session.scalar(stmt)

    async def customers_due_again(self, survey_id: uuid.UUID, before: dt.datetime, limit: int) -> list[uuid.UUID]:
        """Customers whose latest invitation or suppression from this survey is older than
        `before`: one grouped query over both tables. Merged duplicates are left out (their
        history moved to the survivor)."""
        invited = select(Invitation.customer_id.label("customer_id"), Invitation.send_at.label("at")).where(
            Invitation.survey_id == survey_id, Invitation.customer_id.is_not(None), Invitation.cancelled_at.is_(None)
        )
        suppressed = select(Suppression.customer_id.label("customer_id"), Suppression.created_at.label("at")).where(
            Suppression.survey_id == survey_id, Suppression.customer_id.is_not(None)
        )
        history = union_all(invited, suppressed).subquery("history")
        latest = func.max(history.c.at)
        stmt = (
            select(history.c.customer_id)
            .where(
                ~select(literal(1))
                .where(CustomerProfile.id == history.c.customer_id, CustomerProfile.merged_into.is_not(None))
                .exists()
            )
            .group_by(history.c.customer_id)
            .having(latest <= before)
            .order_by(latest, history.c.customer_id)
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())
