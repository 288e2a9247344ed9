"""Touchpoint rules."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cem.fields import field_problem
from cem.paging import after_text
from cem.touchpoints.models import Touchpoint
from cem.touchpoints.repository import TouchpointRepository
from cem.touchpoints.schemas import TouchpointCreate, TouchpointUpdate, check_target
from cxkit.db import utcnow
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams, encode_cursor
from cxkit.http.problems import Conflict, NotFound


async def create_touchpoint(session: AsyncSession, data: TouchpointCreate) -> Touchpoint:
    repo = TouchpointRepository(session)
    if await repo.get_by_key(data.key):
        raise Conflict(f"a touchpoint with key {data.key!r} already exists")
    now = utcnow()
    touchpoint = Touchpoint(id=uuid.uuid4(), **data.model_dump(), version=1, created_at=now, updated_at=now)
    repo.add(touchpoint)
    try:
        await repo.flush()
    except IntegrityError:
        raise Conflict(f"a touchpoint with key {data.key!r} already exists") from None
    return touchpoint


async def get_touchpoint(session: AsyncSession, touchpoint_id: uuid.UUID, *, for_update: bool = False) -> Touchpoint:
    touchpoint = await TouchpointRepository(session).get(touchpoint_id, for_update=for_update)
    if touchpoint is None:
        raise NotFound(f"touchpoint {touchpoint_id} does not exist")
    return touchpoint


async def update_touchpoint(
    session: AsyncSession, touchpoint_id: uuid.UUID, data: TouchpointUpdate, if_match: str | None
) -> Touchpoint:
    touchpoint = await get_touchpoint(session, touchpoint_id, for_update=True)
    check_if_match(if_match, touchpoint.version)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise field_problem(["body", "name"], "name cannot be cleared")
    metric = changes.get("target_metric", touchpoint.target_metric)
    score = changes.get("target_score", touchpoint.target_score)
    problem = check_target(metric, score)
    if problem:
        raise field_problem(["body", "target_score"], problem)
    changed = {k: v for k, v in changes.items() if getattr(touchpoint, k) != v}
    if changed:
        for name, value in changed.items():
            setattr(touchpoint, name, value)
        touchpoint.version += 1
        touchpoint.updated_at = utcnow()
        await TouchpointRepository(session).flush()
    return touchpoint


async def delete_touchpoint(session: AsyncSession, touchpoint_id: uuid.UUID, if_match: str | None) -> None:
    """Refused while a journey or a survey uses the touchpoint; answers keep its key."""
    repo = TouchpointRepository(session)
    touchpoint = await get_touchpoint(session, touchpoint_id, for_update=True)
    check_if_match(if_match, touchpoint.version)
    journeys = await repo.journeys_using(touchpoint.id)
    surveys = await repo.surveys_using(touchpoint.key)
    if journeys or surveys:
        users = [f"journey {n!r}" for n in journeys] + [f"survey {n!r}" for n in surveys]
        raise Conflict(f"touchpoint {touchpoint.key!r} is in use by {', '.join(users)}; remove it there first")
    try:
        await repo.delete(touchpoint.id)
        await repo.flush()
    except IntegrityError:
        raise Conflict(f"touchpoint {touchpoint.key!r} was just added to a journey; remove it there first") from None


async def list_touchpoints(
    session: AsyncSession, page: PageParams, *, channel: str | None = None, journey_stage: str | None = None
) -> tuple[list[Touchpoint], str | None]:
    after = after_text(page)
    rows = await TouchpointRepository(session).list_page(
        limit=page.limit, after=after, channel=channel, journey_stage=journey_stage
    )
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_cursor = encode_cursor([rows[-1].key, str(rows[-1].id)])
    return rows, next_cursor
