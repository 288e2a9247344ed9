"""Touchpoint rules."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cem.touchpoints.models import Touchpoint
from cem.touchpoints.repository import TouchpointRepository
from cem.touchpoints.schemas import TouchpointCreate
from cxkit.db import utcnow
from cxkit.http.pagination import PageParams, encode_cursor
from cxkit.http.problems import Conflict, Unprocessable


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


async def list_touchpoints(session: AsyncSession, page: PageParams) -> tuple[list[Touchpoint], str | None]:
    after = None
    if page.cursor is not None:
        try:
            after = (str(page.cursor[0]), uuid.UUID(page.cursor[1]))
        except (ValueError, IndexError, TypeError):
            raise Unprocessable("cursor is not valid; use the next_cursor of a previous page") from None
    rows = await TouchpointRepository(session).list_page(limit=page.limit, after=after)
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_cursor = encode_cursor([rows[-1].key, str(rows[-1].id)])
    return rows, next_cursor
