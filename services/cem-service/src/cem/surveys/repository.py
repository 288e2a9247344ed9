"""Every survey query."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import exists, func, or_, select, update

from cem.invitations.models import Invitation
from cem.responses.models import SurveyResponse
from cem.surveys.models import Survey
from cxkit import keyset
from cxkit.db import locking, utcnow
from cxkit.http.pagination import PageParams
from cxkit.repository import Repository

NEWEST_FIRST = keyset.Sort(keyset.SortKey("created_at", Survey.created_at, "datetime"), descending=True)


class SurveyRepository(Repository[Survey]):
    model = Survey

    async def by_ids(self, ids: Collection[uuid.UUID]) -> list[Survey]:
        if not ids:
            return []
        return list((await self.session.scalars(select(Survey).where(Survey.id.in_(set(ids))))).all())

    async def list_page(
        self,
        *,
        page: PageParams,
        status: str | None,
        kind: str | None,
        touchpoint: str | None,
    ) -> list[Survey]:
        """Newest first, keyset on (created_at, id); one row more than a page."""
        stmt = select(Survey)
        if status is not None:
            stmt = stmt.where(Survey.status == status)
        if kind is not None:
            stmt = stmt.where(Survey.kind == kind)
        if touchpoint is not None:
            stmt = stmt.where(Survey.touchpoint == touchpoint)
        stmt = keyset.apply(stmt, NEWEST_FIRST, Survey.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def active_with_reminders(self) -> list[Survey]:
        stmt = (
            select(Survey)
            .where(Survey.status == "active", Survey.reminder_after_days.is_not(None))
            .order_by(Survey.created_at, Survey.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def open_due(self) -> int:
        """Open the drafts whose `opens_at` has come (activated at that moment), unless their
        `closes_at` has passed too; returns how many."""
        now = utcnow()
        result = await self.session.execute(
            update(Survey)
            .where(
                Survey.status == "draft",
                Survey.opens_at <= now,
                or_(Survey.closes_at.is_(None), Survey.closes_at > now),
            )
            .values(status="active", activated_at=Survey.opens_at, version=Survey.version + 1, updated_at=now)
            .returning(Survey.id)
        )
        return len(result.all())

    async def close_due(self) -> int:
        """Close the active surveys whose `closes_at` has come (closed at that moment); returns
        how many."""
        now = utcnow()
        result = await self.session.execute(
            update(Survey)
            .where(Survey.status == "active", Survey.closes_at <= now)
            .values(status="closed", closed_at=Survey.closes_at, version=Survey.version + 1, updated_at=now)
            .returning(Survey.id)
        )
        return len(result.all())

    async def responses_of(self, survey_id: uuid.UUID) -> int:
        return int(await self.session.scalar(select(func.count()).where(SurveyResponse.survey_id == survey_id)) or 0)

    async def hold(self, survey_id: uuid.UUID, *, alone: bool = False) -> Survey | None:
        """The survey read again under a lock on its row, held until the transaction ends (None
        if it is gone). An answer holds it while it is checked and stored: shared (`FOR KEY
        SHARE`), answers do not wait for each other, while a change of the survey (`get(...,
        for_update=True)`, `FOR UPDATE`) waits for them and they for it, then read what it made.
        `alone` (`FOR NO KEY UPDATE`): one answer at a time, to count them towards `max_responses`
        and close the survey with the last one; it does not conflict with the shared holds, so an
        answer holding one takes it without waiting for the others to end."""
        stmt = locking(select(Survey).where(Survey.id == survey_id), "no key update" if alone else "key share")
        stmt = stmt.execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def has_responses(self, survey_id: uuid.UUID) -> bool:
        return bool(await self.session.scalar(select(exists().where(SurveyResponse.survey_id == survey_id))))

    async def has_invitations(self, survey_id: uuid.UUID) -> bool:
        return bool(await self.session.scalar(select(exists().where(Invitation.survey_id == survey_id))))
