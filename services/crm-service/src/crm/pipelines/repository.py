"""Every pipeline and stage query."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import delete, func, select, update

from crm.deals.models import Deal
from crm.pipelines.models import Pipeline, PipelineStage
from cxkit import keyset
from cxkit.db import insert_ignoring_conflicts, lock_keys, next_version
from cxkit.http.pagination import PageParams
from cxkit.repository import Repository

SORT_KEYS = (keyset.SortKey("name", Pipeline.name, "str"), keyset.SortKey("created_at", Pipeline.created_at, "datetime"))


class PipelineRepository(Repository[Pipeline]):
    model = Pipeline

    async def get_default(self) -> Pipeline | None:
        return await self.session.scalar(select(Pipeline).where(Pipeline.is_default.is_(True)))

    async def get_shared(self, pipeline_id: uuid.UUID) -> Pipeline | None:
        """The pipeline locked FOR SHARE until the transaction ends (refreshed from what the lock
        read): for a deal write that puts a deal in one of its stages. Edits of its stages lock
        it FOR UPDATE, so the two wait for each other and the write reads the stages as the edit
        left them. (FOR KEY SHARE would let a plain UPDATE of the row through.)"""
        stmt = (
            select(Pipeline)
            .where(Pipeline.id == pipeline_id)
            .with_for_update(read=True)
            .execution_options(populate_existing=True)
        )
        return await self.session.scalar(stmt)

    async def lock_default_changes(self) -> None:
        """Make changes of the default pipeline wait for each other until the transaction ends."""
        await lock_keys(self.session, "pipelines", ["default"])

    async def name_taken(self, name: str, *, other_than: uuid.UUID | None = None) -> bool:
        """Whether another pipeline has this name in any case; lowered by PostgreSQL, as the
        unique index on lower(name) is (it reads that index). Python lowers some letters
        otherwise (a final capital sigma, a dotted capital I)."""
        stmt = select(Pipeline.id).where(func.lower(Pipeline.name) == func.lower(name))
        if other_than is not None:
            stmt = stmt.where(Pipeline.id != other_than)
        return (await self.session.scalar(stmt.limit(1))) is not None

    async def stages(self, pipeline_id: uuid.UUID) -> list[PipelineStage]:
        stmt = select(PipelineStage).where(PipelineStage.pipeline_id == pipeline_id).order_by(PipelineStage.position)
        return list((await self.session.scalars(stmt)).all())

    async def stages_of(self, pipeline_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[PipelineStage]]:
        """Stages of several pipelines in one query (for a list page)."""
        found: dict[uuid.UUID, list[PipelineStage]] = defaultdict(list)
        if pipeline_ids:
            stmt = (
                select(PipelineStage)
                .where(PipelineStage.pipeline_id.in_(pipeline_ids))
                .order_by(PipelineStage.pipeline_id, PipelineStage.position)
            )
            for stage in (await self.session.scalars(stmt)).all():
                found[stage.pipeline_id].append(stage)
        return found

    async def stage(self, stage_id: uuid.UUID) -> PipelineStage | None:
        return await self.session.get(PipelineStage, stage_id)

    async def list_page(self, sort: keyset.Sort, page: PageParams) -> list[Pipeline]:
        stmt = keyset.apply(select(Pipeline), sort, Pipeline.id, page)
        return list((await self.session.scalars(stmt)).all())

    async def insert_if_absent(self, pipeline: dict[str, Any], stages: list[dict[str, Any]]) -> None:
        """Insert a pipeline and its stages unless its id exists (safe under concurrency)."""
        await self.session.execute(insert_ignoring_conflicts(Pipeline.__table__).values(pipeline))
        await self.session.execute(insert_ignoring_conflicts(PipelineStage.__table__).values(stages))

    async def clear_default(self, except_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Pipeline)
            .where(Pipeline.is_default.is_(True), Pipeline.id != except_id)
            .values(is_default=False, **next_version(Pipeline))
        )

    async def touch_deals_in(self, stage_ids: list[uuid.UUID]) -> None:
        """A new version for every deal in these stages (a deal serves its stage's name and
        probability, so copies read before they changed are no longer current)."""
        if stage_ids:
            await self.session.execute(
                update(Deal)
                .where(Deal.stage_id.in_(stage_ids))
                .values(**next_version(Deal))
                .execution_options(synchronize_session=False)
            )

    async def deal_counts_by_stage(self, stage_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        if not stage_ids:
            return {}
        rows = await self.session.execute(
            select(Deal.stage_id, func.count()).where(Deal.stage_id.in_(stage_ids)).group_by(Deal.stage_id)
        )
        return {stage_id: count for stage_id, count in rows}

    async def has_deals(self, pipeline_id: uuid.UUID) -> bool:
        return (await self.session.scalar(select(Deal.id).where(Deal.pipeline_id == pipeline_id).limit(1))) is not None

    async def delete_stages(self, stage_ids: list[uuid.UUID]) -> None:
        if stage_ids:
            await self.session.execute(delete(PipelineStage).where(PipelineStage.id.in_(stage_ids)))

    async def delete(self, row: Pipeline) -> None:
        """Its stages go at once; the pipeline with the next flush."""
        await self.session.execute(delete(PipelineStage).where(PipelineStage.pipeline_id == row.id))
        await super().delete(row)
