"""Pipeline rules: ordered stages, exactly one default pipeline, stages never removed from
under a deal."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crm.pipelines.models import Pipeline, PipelineStage
from crm.pipelines.repository import SORT_KEYS, PipelineRepository
from crm.pipelines.schemas import DEFAULT_STAGES, PipelineCreate, PipelineUpdate, StageIn
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, Unprocessable, field_problem

# The built-in pipeline has fixed ids, so concurrent first requests create it only once.
DEFAULT_PIPELINE_ID = uuid.UUID("9d7ae5c4-6b4e-5a8d-9c1f-2b3a4c5d6e7f")
DEFAULT_PIPELINE_NAME = "Sales pipeline"


async def ensure_default_pipeline(session: AsyncSession) -> Pipeline:
    """The default pipeline; the built-in one (SPEC stages) is created on first need."""
    repo = PipelineRepository(session)
    found = await repo.get_default()
    if found is not None:
        return found
    now = utcnow()
    await repo.insert_if_absent(
        {
            "id": DEFAULT_PIPELINE_ID,
            "name": DEFAULT_PIPELINE_NAME,
            "is_default": True,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        },
        [
            {
                "id": uuid.uuid5(DEFAULT_PIPELINE_ID, stage["name"]),
                "pipeline_id": DEFAULT_PIPELINE_ID,
                "name": stage["name"],
                "position": position,
                "probability": Decimal(stage["probability"]),
                "is_won": stage.get("is_won", False),
                "is_lost": stage.get("is_lost", False),
            }
            for position, stage in enumerate(DEFAULT_STAGES)
        ],
    )
    found = await repo.get_default()
    if found is None:  # the built-in one exists but is no longer the default, and none is
        raise Conflict("no default pipeline: make one of the pipelines the default")
    return found


async def get_pipeline(session: AsyncSession, pipeline_id: uuid.UUID) -> tuple[Pipeline, list[PipelineStage]]:
    repo = PipelineRepository(session)
    pipeline = await repo.get(pipeline_id)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id} does not exist")
    return pipeline, await repo.stages(pipeline.id)


async def resolve_pipeline(
    session: AsyncSession, pipeline_id: uuid.UUID | None, *, for_deal: bool = False
) -> tuple[Pipeline, list[PipelineStage]]:
    """A pipeline named in a request body (422 if unknown), or the default one, with its stages.

    `for_deal`: for a deal write that puts a deal in one of the pipeline's stages, the pipeline
    is locked FOR SHARE until the transaction ends, before its stages are read. A concurrent
    edit of its stages (which locks it FOR UPDATE) then either ends first, and the write reads
    the stages it left, or waits until the write has ended, and counts its deal: a deal is never
    left open in a stage just made won, nor put in one just removed."""
    repo = PipelineRepository(session)

    async def read(pipeline_id: uuid.UUID) -> Pipeline | None:
        return await (repo.get_shared(pipeline_id) if for_deal else repo.get(pipeline_id))

    if pipeline_id is None:
        default = await ensure_default_pipeline(session)
        found = await read(default.id) if for_deal else default
        if found is None:  # replaced as the default and deleted since it was read
            raise Conflict("the default pipeline has just changed; try again")
    else:
        found = await read(pipeline_id)
        if found is None:
            raise Unprocessable(
                f"pipeline_id {pipeline_id} does not exist",
                errors=[{"loc": ["body", "pipeline_id"], "msg": "unknown id", "type": "reference"}],
            )
    return found, await repo.stages(found.id)


async def list_pipelines(
    session: AsyncSession, page: PageParams
) -> tuple[list[tuple[Pipeline, list[PipelineStage]]], str | None]:
    await ensure_default_pipeline(session)
    repo = PipelineRepository(session)
    sort = keyset.parse_sort("name", SORT_KEYS)
    rows, cursor = keyset.cut(await repo.list_page(sort, page), sort, page)
    stages = await repo.stages_of([p.id for p in rows])
    return [(p, stages.get(p.id, [])) for p in rows], cursor


def _stage_row(pipeline_id: uuid.UUID, position: int, data: StageIn) -> PipelineStage:
    return PipelineStage(
        id=new_id(),
        pipeline_id=pipeline_id,
        name=data.name.strip(),
        position=position,
        probability=data.probability,
        is_won=data.is_won,
        is_lost=data.is_lost,
    )


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a pipeline named {name!r} already exists")


async def create_pipeline(session: AsyncSession, data: PipelineCreate) -> tuple[Pipeline, list[PipelineStage]]:
    repo = PipelineRepository(session)
    # The built-in default comes first, so its name and its default role are never in doubt.
    await ensure_default_pipeline(session)
    if await repo.name_taken(data.name):
        raise _name_taken(data.name)
    if any(s.id is not None for s in data.stages):
        raise field_problem(["body", "stages"], "new stages have no id")
    now = utcnow()
    pipeline = Pipeline(id=new_id(), name=data.name, is_default=False, version=1, created_at=now, updated_at=now)
    repo.add(pipeline)
    stages = [_stage_row(pipeline.id, i, s) for i, s in enumerate(data.stages)]
    for stage in stages:
        repo.add(stage)
    await repo.flush_or(_name_taken(data.name))
    if data.is_default:
        await _make_default(repo, pipeline)
    return pipeline, stages


async def _make_default(repo: PipelineRepository, pipeline: Pipeline) -> None:
    # One change of the default at a time: two at once each unset the default they saw and set
    # their own, and the second to commit broke the single-default index (a 500). Waiting here,
    # the second unsets what the first made the default.
    await repo.lock_default_changes()
    await repo.clear_default(pipeline.id)
    await repo.flush()
    pipeline.is_default = True
    await repo.flush()


async def update_pipeline(
    session: AsyncSession, pipeline_id: uuid.UUID, data: PipelineUpdate, if_match: str | None
) -> tuple[Pipeline, list[PipelineStage]]:
    repo = PipelineRepository(session)
    pipeline = await repo.get(pipeline_id, for_update=True)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id} does not exist")
    check_if_match(if_match, pipeline.version)
    stages = await repo.stages(pipeline.id)
    changed = False
    if data.name is not None and data.name != pipeline.name:
        if await repo.name_taken(data.name, other_than=pipeline.id):
            raise _name_taken(data.name)
        pipeline.name = data.name
        await repo.flush_or(_name_taken(data.name))
        changed = True
    if data.stages is not None:
        stages = await _replace_stages(repo, pipeline, stages, data.stages)
        changed = True
    if data.is_default and not pipeline.is_default:
        await _make_default(repo, pipeline)
        changed = True
    if changed:
        pipeline.version += 1
        pipeline.updated_at = utcnow()
        await repo.flush()
    return pipeline, stages


async def _replace_stages(
    repo: PipelineRepository, pipeline: Pipeline, current: list[PipelineStage], wanted: list[StageIn]
) -> list[PipelineStage]:
    by_id = {s.id: s for s in current}
    unknown = [str(s.id) for s in wanted if s.id is not None and s.id not in by_id]
    if unknown:
        raise field_problem(["body", "stages"], f"stage ids not in this pipeline: {', '.join(unknown)}")
    kept_ids = {s.id for s in wanted if s.id is not None}
    removed = [s.id for s in current if s.id not in kept_ids]
    reclassified = [
        s.id for s in wanted if s.id is not None and (by_id[s.id].is_won, by_id[s.id].is_lost) != (s.is_won, s.is_lost)
    ]
    counts = await repo.deal_counts_by_stage(removed + reclassified)
    busy = [by_id[sid].name for sid in removed if counts.get(sid)]
    if busy:
        raise Conflict(f"stages still holding deals cannot be removed: {', '.join(busy)}; move the deals first")
    busy = [by_id[sid].name for sid in reclassified if counts.get(sid)]
    if busy:
        raise Conflict(f"won/lost cannot change on stages holding deals: {', '.join(busy)}")
    try:
        await repo.delete_stages(removed)
    except IntegrityError:
        # A deal was put in one after the count by a writer that does not lock the pipeline
        # (every deal write of this service does): the deals' foreign key refuses the removal.
        names = ", ".join(by_id[sid].name for sid in removed)
        raise Conflict(f"stages still holding deals cannot be removed: a deal is in one of {names}; move it first") from None
    result: list[PipelineStage] = []
    shown_changed: list[uuid.UUID] = []  # stages whose deals show a new name or probability
    for position, data in enumerate(wanted):
        if data.id is None:
            stage = _stage_row(pipeline.id, position, data)
            repo.add(stage)
        else:
            stage = by_id[data.id]
            if (stage.name, stage.probability) != (data.name.strip(), data.probability):
                shown_changed.append(stage.id)
            stage.name = data.name.strip()
            stage.position = position
            stage.probability = data.probability
            stage.is_won, stage.is_lost = data.is_won, data.is_lost
        result.append(stage)
    await repo.flush()
    await repo.touch_deals_in(shown_changed)
    return result


async def delete_pipeline(session: AsyncSession, pipeline_id: uuid.UUID, if_match: str | None) -> None:
    repo = PipelineRepository(session)
    pipeline = await repo.get(pipeline_id, for_update=True)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id} does not exist")
    check_if_match(if_match, pipeline.version)
    if pipeline.is_default:
        raise Conflict("the default pipeline cannot be deleted; make another one the default first")
    if await repo.has_deals(pipeline.id):
        raise Conflict("a pipeline with deals cannot be deleted")
    await repo.delete(pipeline)
    # As in `_replace_stages`: a deal put in it by a writer that does not lock it.
    await repo.flush_or(Conflict("a pipeline with deals cannot be deleted"))
