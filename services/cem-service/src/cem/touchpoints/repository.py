"""Every touchpoint query."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cem.touchpoints.models import Touchpoint


class TouchpointRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_key(self, key: str) -> Touchpoint | None:
        return await self.session.scalar(select(Touchpoint).where(Touchpoint.key == key))

    async def list_page(self, *, limit: int, after: tuple[str, uuid.UUID] | None) -> list[Touchpoint]:
        """Ordered by key, keyset on (key, id)."""
        stmt = select(Touchpoint)
        if after is not None:
            key, tid = after
            stmt = stmt.where(or_(Touchpoint.key > key, and_(Touchpoint.key == key, Touchpoint.id > tid)))
        stmt = stmt.order_by(Touchpoint.key, Touchpoint.id).limit(limit + 1)
        return list((await self.session.scalars(stmt)).all())

    def add(self, touchpoint: Touchpoint) -> None:
        self.session.add(touchpoint)

    async def flush(self) -> None:
        await self.session.flush()
