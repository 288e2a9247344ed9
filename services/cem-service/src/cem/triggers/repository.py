"""Every query of the invitation rules: surveys that trigger, pairs already judged, customers due again."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection

from sqlalchemy import func, literal, or_, select, union_all

from cem.customers.models import CustomerProfile
from cem.invitations.models import Invitation
from cem.suppressions.models import Suppression
from cem.surveys.models import Survey
from cxkit.db import any_of
from cxkit.repository import SessionRepository


class TriggerRepository(SessionRepository):
    """Which surveys an interaction or a date sends."""

    async def active_triggered_by(self, interaction_types: Collection[str]) -> list[Survey]:
        if not interaction_types:
            return []
        stmt = (
            select(Survey)
            .where(
                Survey.status == "active",
                Survey.trigger_interaction_type.in_(set(interaction_types)),
                # Past its closes_at, though the scheduler has not closed it yet.
                or_(Survey.closes_at.is_(None), Survey.closes_at > func.now()),
            )
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

    async def active_resurveying(self) -> list[uuid.UUID]:
        stmt = (
            select(Survey.id)
            .where(Survey.status == "active", Survey.resurvey_after_days.is_not(None))
            .order_by(Survey.created_at, Survey.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def judged(self, interaction_ids: Collection[uuid.UUID]) -> set[tuple[uuid.UUID, uuid.UUID]]:
        """(survey, interaction) pairs that already made an invitation or a suppression."""
        if not interaction_ids:
            return set()
        ids = set(interaction_ids)
        invited = select(Invitation.survey_id, Invitation.interaction_id).where(any_of(Invitation.interaction_id, ids))
        suppressed = select(Suppression.survey_id, Suppression.interaction_id).where(any_of(Suppression.interaction_id, ids))
        return {(r[0], r[1]) for r in (await self.session.execute(union_all(invited, suppressed))).all()}

    async def lock_survey(self, survey_id: uuid.UUID) -> Survey | None:
        """The survey, locked for this transaction; None if another scheduler holds it or it is
        no longer active (closed, back in draft, or past its `closes_at`)."""
        stmt = (
            select(Survey)
            .where(
                Survey.id == survey_id,
                Survey.status == "active",
                or_(Survey.closes_at.is_(None), Survey.closes_at > func.now()),
            )
            .with_for_update(skip_locked=True)
        )
        return await self.session.scalar(stmt)

    async def customers_due_again(self, survey_id: uuid.UUID, before: dt.datetime, limit: int) -> list[uuid.UUID]:
        """Customers whose latest invitation or suppression from this survey is older than
        `before`: one grouped query over both tables. Merged duplicates are left out (their
        history moved to the survivor).

        Cancelled invitations count, by their `send_at`: one cancelled after it went out reached
        the customer; one cancelled before is a round judged and withdrawn, as a suppression is.
        Leaving them out would re-invite the customer at once (undoing the cancel) when an older
        invitation is past the interval, or drop them from the recurrence when it was their only one."""
        invited = select(Invitation.customer_id.label("customer_id"), Invitation.send_at.label("at")).where(
            Invitation.survey_id == survey_id, Invitation.customer_id.is_not(None)
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
