"""Every follow-up query."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cem.followups.models import Followup


class FollowupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, followup: Followup) -> None:
        self.session.add(followup)

    async def for_customer(self, customer_id: uuid.UUID, limit: int) -> list[Followup]:
        stmt = select(Followup).where(Followup.customer_id == customer_id).order_by(Followup.created_at.desc()).limit(limit)
        return list((await self.session.scalars(stmt)).all())

    async def count_open(self, customer_id: uuid.UUID) -> int:
        stmt = select(func.count()).where(Followup.customer_id == customer_id, Followup.status == "open")
        return int(await self.session.scalar(stmt) or 0)
