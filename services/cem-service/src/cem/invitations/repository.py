"""Every invitation query."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from cem.invitations.models import Invitation


def status_condition(status: str, now: dt.datetime) -> ColumnElement[bool]:
    """The SQL condition of a derived invitation status."""
    if status == "answered":
        return Invitation.answered_at.is_not(None)
    if status == "expired":
        return and_(Invitation.answered_at.is_(None), Invitation.expires_at <= now)
    open_ = and_(Invitation.answered_at.is_(None), Invitation.expires_at > now)
    if status == "opened":
        return and_(open_, Invitation.opened_at.is_not(None))
    return and_(open_, Invitation.opened_at.is_(None))


class InvitationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, invitation_id: uuid.UUID) -> Invitation | None:
        return await self.session.get(Invitation, invitation_id)

    async def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        return await self.session.scalar(select(Invitation).where(Invitation.token_hash == token_hash))

    async def open_for(self, survey_id: uuid.UUID, customer_id: uuid.UUID, now: dt.datetime) -> Invitation | None:
        """The customer's newest unanswered, unexpired invitation to the survey."""
        stmt = (
            select(Invitation)
            .where(
                Invitation.survey_id == survey_id,
                Invitation.customer_id == customer_id,
                Invitation.answered_at.is_(None),
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
        limit: int,
        after: tuple[dt.datetime, uuid.UUID] | None,
    ) -> list[Invitation]:
        """Newest first, keyset on (created_at, id)."""
        stmt = select(Invitation)
        if survey_id is not None:
            stmt = stmt.where(Invitation.survey_id == survey_id)
        if customer_id is not None:
            stmt = stmt.where(Invitation.customer_id == customer_id)
        if status is not None:
            stmt = stmt.where(status_condition(status, now))
        if after is not None:
            created, iid = after
            stmt = stmt.where(or_(Invitation.created_at < created, and_(Invitation.created_at == created, Invitation.id < iid)))
        stmt = stmt.order_by(Invitation.created_at.desc(), Invitation.id.desc()).limit(limit + 1)
        return list((await self.session.scalars(stmt)).all())

    async def mark_opened(self, invitation_id: uuid.UUID, now: dt.datetime) -> None:
        await self.session.execute(
            update(Invitation).where(Invitation.id == invitation_id, Invitation.opened_at.is_(None)).values(opened_at=now)
        )

    async def claim_for_answer(self, invitation_id: uuid.UUID, now: dt.datetime) -> bool:
        """Mark the invitation answered unless it already is. Concurrent claims queue on the row
        lock and only the first one wins, so an invitation is answered once."""
        result = await self.session.execute(
            update(Invitation)
            .where(Invitation.id == invitation_id, Invitation.answered_at.is_(None))
            .values(answered_at=now)
            .returning(Invitation.id)
        )
        return result.first() is not None

    def add(self, invitation: Invitation) -> None:
        self.session.add(invitation)

    async def flush(self) -> None:
        await self.session.flush()
