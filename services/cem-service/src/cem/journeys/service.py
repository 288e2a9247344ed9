"""Journey rules: stages in order, touchpoints (by key or id; a reference that reads as a UUID is
looked up as both, an id match first) in order within each stage."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cem.journeys.models import Journey
from cem.journeys.repository import BY_NAME, JourneyRepository
from cem.journeys.schemas import JourneyCreate, JourneyRead, JourneyTouchpoint, JourneyUpdate, StageInput, StageRead
from cem.touchpoints.repository import TouchpointRepository
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, field_problem

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _as_id(ref: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


def _resolve(ref: str, by_id: dict[uuid.UUID, uuid.UUID], by_key: dict[str, uuid.UUID]) -> uuid.UUID | None:
    """The touchpoint `ref` names: the one with that id if it reads as a UUID and one has it,
    else the one with that key. The id wins: ids are made by the service, so a key that spells
    another touchpoint's id cannot take over what the id names (and a new id equal to an
    existing key is as unlikely as any two random UUIDs alike)."""
    as_id = _as_id(ref)
    if as_id is not None and as_id in by_id:
        return by_id[as_id]
    return by_key.get(ref)


async def _resolve_stages(session: AsyncSession, stages: list[StageInput]) -> list[dict[str, Any]]:
    """Stage inputs with every touchpoint reference turned into an id; 422 names the bad reference."""
    seen_names: set[str] = set()
    for i, stage in enumerate(stages):
        folded = stage.name.casefold()
        if folded in seen_names:
            raise field_problem(["body", "stages", i, "name"], f"stage name {stage.name!r} is used twice")
        seen_names.add(folded)
    refs = [ref for stage in stages for ref in stage.touchpoints]
    ids = [i for i in (_as_id(r) for r in refs) if i is not None]
    # A key may read as a UUID ('0123456789abcdef0123456789abcdef'): every reference is also
    # looked up as a key, in the same one query.
    found = await TouchpointRepository(session).by_keys_or_ids(refs, ids)
    by_key = {t.key: t.id for t in found}
    by_id = {t.id: t.id for t in found}
    resolved: list[dict[str, Any]] = []
    placed: dict[uuid.UUID, str] = {}
    for i, stage in enumerate(stages):
        touchpoint_ids = []
        for j, ref in enumerate(stage.touchpoints):
            tid = _resolve(ref, by_id, by_key)
            if tid is None:
                as_key, as_id = KEY_PATTERN.match(ref) is not None, _as_id(ref) is not None
                what = "key or id" if as_key and as_id else "key" if as_key else "id"
                raise field_problem(["body", "stages", i, "touchpoints", j], f"no touchpoint with {what} {ref!r}")
            if tid in placed:
                raise field_problem(
                    ["body", "stages", i, "touchpoints", j],
                    f"touchpoint {ref!r} is already in stage {placed[tid]!r}; a touchpoint appears once per journey",
                )
            placed[tid] = stage.name
            touchpoint_ids.append(tid)
        resolved.append({"name": stage.name, "description": stage.description, "touchpoint_ids": touchpoint_ids})
    return resolved


async def create_journey(session: AsyncSession, data: JourneyCreate) -> Journey:
    stages = await _resolve_stages(session, data.stages)
    now = utcnow()
    journey = Journey(id=new_id(), name=data.name, description=data.description, version=1, created_at=now, updated_at=now)
    repo = JourneyRepository(session)
    repo.add(journey)
    await repo.flush()
    await _write_stages(repo, journey.id, stages)
    return journey


async def _write_stages(repo: JourneyRepository, journey_id: uuid.UUID, stages: list[dict[str, Any]]) -> None:
    try:
        await repo.replace_stages(journey_id, stages)
        await repo.flush()
    except IntegrityError:
        raise Conflict("a touchpoint of this journey was deleted meanwhile; fetch the touchpoints and retry") from None


async def get_journey(session: AsyncSession, journey_id: uuid.UUID, *, for_update: bool = False) -> Journey:
    journey = await JourneyRepository(session).get(journey_id, for_update=for_update)
    if journey is None:
        raise NotFound(f"journey {journey_id} does not exist")
    return journey


async def update_journey(session: AsyncSession, journey_id: uuid.UUID, data: JourneyUpdate, if_match: str | None) -> Journey:
    repo = JourneyRepository(session)
    journey = await get_journey(session, journey_id, for_update=True)
    check_if_match(if_match, journey.version)
    changes = data.model_dump(exclude_unset=True, exclude={"stages"})
    changed = {k: v for k, v in changes.items() if getattr(journey, k) != v}
    for name, value in changed.items():
        setattr(journey, name, value)
    if data.stages is not None:
        stages = await _resolve_stages(session, data.stages)
        current = await read_journeys(session, [journey])
        if _stage_shape(current[0].stages) != [(s["name"], s["description"], s["touchpoint_ids"]) for s in stages]:
            await _write_stages(repo, journey.id, stages)
            changed["stages"] = True
    if changed:
        journey.version += 1
        journey.updated_at = utcnow()
        await repo.flush()
    return journey


def _stage_shape(stages: list[StageRead]) -> list[tuple[str, str | None, list[uuid.UUID]]]:
    return [(s.name, s.description, [t.id for t in s.touchpoints]) for s in stages]


async def delete_journey(session: AsyncSession, journey_id: uuid.UUID, if_match: str | None) -> None:
    journey = await get_journey(session, journey_id, for_update=True)
    check_if_match(if_match, journey.version)
    await JourneyRepository(session).delete_by_id(journey.id)


async def read_journeys(session: AsyncSession, journeys: list[Journey]) -> list[JourneyRead]:
    """Journeys with their stages and touchpoints (two queries for the whole list)."""
    stages = await JourneyRepository(session).stages_of([j.id for j in journeys])
    return [
        JourneyRead(
            id=j.id,
            name=j.name,
            description=j.description,
            stages=[
                StageRead(
                    name=stage.name,
                    description=stage.description,
                    touchpoints=[JourneyTouchpoint.model_validate(t) for t in touchpoints],
                )
                for stage, touchpoints in stages.get(j.id, [])
            ],
            version=j.version,
            created_at=j.created_at,
            updated_at=j.updated_at,
        )
        for j in journeys
    ]


async def list_journeys(session: AsyncSession, page: PageParams, *, name: str | None) -> tuple[list[JourneyRead], str | None]:
    rows, next_cursor = keyset.cut(await JourneyRepository(session).list_page(page=page, name=name), BY_NAME, page)
    return await read_journeys(session, rows), next_cursor
