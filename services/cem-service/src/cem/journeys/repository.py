"""Every journey query."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select

from cem.journeys.models import Journey, JourneyStage, JourneyStep
from cem.touchpoints.models import Touchpoint
from cxkit import keyset
from cxkit.db import new_id
from cxkit.http.pagination import PageParams
from cxkit.repository import Repository

BY_NAME = keyset.Sort(keyset.SortKey("name", Journey.name, "str"), descending=False)


class JourneyRepository(Repository[Journey]):
    model = Journey

    async def list_page(self, *, page: PageParams, name: str | None) -> list[Journey]:
        """Ordered by name, keyset on (name, id); one row more than a page."""
        stmt = select(Journey)
        if name is not None:
            stmt = stmt.where(Journey.name == name)
        return list((await self.session.scalars(keyset.apply(stmt, BY_NAME, Journey.id, page))).all())

    async def stages_of(self, journey_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[tuple[JourneyStage, list[Touchpoint]]]]:
        """Each journey's stages in order with their touchpoints in order: two queries for any number of journeys."""
        if not journey_ids:
            return {}
        stages = (
            await self.session.scalars(
                select(JourneyStage)
                .where(JourneyStage.journey_id.in_(journey_ids))
                .order_by(JourneyStage.journey_id, JourneyStage.position)
            )
        ).all()
        steps = await self.session.execute(
            select(JourneyStep.stage_id, Touchpoint)
            .join(Touchpoint, Touchpoint.id == JourneyStep.touchpoint_id)
            .where(JourneyStep.journey_id.in_(journey_ids))
            .order_by(JourneyStep.stage_id, JourneyStep.position)
        )
        by_stage: dict[uuid.UUID, list[Touchpoint]] = defaultdict(list)
        for stage_id, touchpoint in steps.all():
            by_stage[stage_id].append(touchpoint)
        result: dict[uuid.UUID, list[tuple[JourneyStage, list[Touchpoint]]]] = defaultdict(list)
        for stage in stages:
            result[stage.journey_id].append((stage, by_stage.get(stage.id, [])))
        return result

    async def replace_stages(self, journey_id: uuid.UUID, stages: list[dict[str, Any]]) -> None:
        """Drop the journey's stages and steps and write `stages` ({name, description, touchpoint_ids}) in order."""
        await self.session.execute(delete(JourneyStep).where(JourneyStep.journey_id == journey_id))
        await self.session.execute(delete(JourneyStage).where(JourneyStage.journey_id == journey_id))
        stage_rows: list[dict[str, Any]] = []
        step_rows: list[dict[str, Any]] = []
        for position, stage in enumerate(stages):
            stage_id = new_id()
            stage_rows.append(
                {
                    "id": stage_id,
                    "journey_id": journey_id,
                    "position": position,
                    "name": stage["name"],
                    "description": stage["description"],
                }
            )
            step_rows.extend(
                {"stage_id": stage_id, "position": i, "journey_id": journey_id, "touchpoint_id": tid}
                for i, tid in enumerate(stage["touchpoint_ids"])
            )
        if stage_rows:
            await self.session.execute(insert(JourneyStage), stage_rows)
        if step_rows:
            await self.session.execute(insert(JourneyStep), step_rows)

    async def delete_by_id(self, id: uuid.UUID) -> None:
        """Its stages and their steps go first."""
        await self.session.execute(delete(JourneyStep).where(JourneyStep.journey_id == id))
        await self.session.execute(delete(JourneyStage).where(JourneyStage.journey_id == id))
        await super().delete_by_id(id)
