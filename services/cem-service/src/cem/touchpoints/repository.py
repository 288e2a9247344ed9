"""Every touchpoint query."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cem.journeys.models import Journey, JourneyStep
from cem.surveys.models import Survey
from cem.touchpoints.models import Touchpoint, TouchpointInteraction


class TouchpointRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, touchpoint_id: uuid.UUID, *, for_update: bool = False) -> Touchpoint | None:
        return await self.session.get(Touchpoint, touchpoint_id, with_for_update=for_update or None)

    async def get_by_key(self, key: str) -> Touchpoint | None:
        return await self.session.scalar(select(Touchpoint).where(Touchpoint.key == key))

    async def existing_keys(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        return set((await self.session.scalars(select(Touchpoint.key).where(Touchpoint.key.in_(set(keys))))).all())

    async def by_keys_or_ids(self, keys: Sequence[str], ids: Sequence[uuid.UUID]) -> list[Touchpoint]:
        conditions = []
        if keys:
            conditions.append(Touchpoint.key.in_(set(keys)))
        if ids:
            conditions.append(Touchpoint.id.in_(set(ids)))
        if not conditions:
            return []
        return list((await self.session.scalars(select(Touchpoint).where(or_(*conditions)))).all())

    async def by_ids(self, ids: Sequence[uuid.UUID]) -> list[Touchpoint]:
        if not ids:
            return []
        return list((await self.session.scalars(select(Touchpoint).where(Touchpoint.id.in_(set(ids))))).all())

    async def list_page(
        self,
        *,
        limit: int,
        after: tuple[str, uuid.UUID] | None,
        channel: str | None = None,
        journey_stage: str | None = None,
    ) -> list[Touchpoint]:
        """Ordered by key, keyset on (key, id)."""
        stmt = select(Touchpoint)
        if channel is not None:
            stmt = stmt.where(Touchpoint.channel == channel)
        if journey_stage is not None:
            stmt = stmt.where(Touchpoint.journey_stage == journey_stage)
        if after is not None:
            key, tid = after
            stmt = stmt.where(or_(Touchpoint.key > key, and_(Touchpoint.key == key, Touchpoint.id > tid)))
        stmt = stmt.order_by(Touchpoint.key, Touchpoint.id).limit(limit + 1)
        return list((await self.session.scalars(stmt)).all())

    async def journeys_using(self, touchpoint_id: uuid.UUID) -> list[str]:
        stmt = (
            select(Journey.name)
            .join(JourneyStep, JourneyStep.journey_id == Journey.id)
            .where(JourneyStep.touchpoint_id == touchpoint_id)
            .order_by(Journey.name)
            .limit(10)
        )
        return list((await self.session.scalars(stmt)).all())

    async def surveys_using(self, key: str) -> list[str]:
        stmt = (
            select(Survey.name)
            .where(or_(Survey.touchpoint == key, Survey.trigger_touchpoint == key))
            .order_by(Survey.name)
            .limit(10)
        )
        return list((await self.session.scalars(stmt)).all())

    async def history(self, customer_id: uuid.UUID, limit: int) -> list[TouchpointInteraction]:
        """A customer's latest interactions at touchpoints, newest first."""
        stmt = (
            select(TouchpointInteraction)
            .where(TouchpointInteraction.customer_id == customer_id)
            .order_by(TouchpointInteraction.occurred_at.desc())
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())

    def add(self, touchpoint: Touchpoint) -> None:
        self.session.add(touchpoint)

    async def delete(self, touchpoint_id: uuid.UUID) -> None:
        await self.session.execute(delete(Touchpoint).where(Touchpoint.id == touchpoint_id))

    async def flush(self) -> None:
        await self.session.flush()
