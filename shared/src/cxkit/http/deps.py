"""Dependencies both services use: one DB session per request, the asyncpg pool, the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cxkit.settings import ServiceSettings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; routes commit before answering (never in cleanup)."""
    async with request.app.state.session_factory() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def pool_of(request: Request) -> asyncpg.Pool:
    """The asyncpg pool for hot paths (see cxkit.pg_pool). The hottest routes (GET a customer,
    its view, POST an interaction) take `request: Request` and call this rather than depend on
    `PgPoolDep`: FastAPI resolves a `Request` parameter in place, where each dependency costs a
    solving pass of its own."""
    pool: asyncpg.Pool = request.app.state.pg_pool
    return pool


async def get_pg_pool(request: Request) -> asyncpg.Pool:
    """The asyncpg pool as a dependency (`PgPoolDep`), see `pool_of`."""
    return pool_of(request)


PgPoolDep = Annotated[asyncpg.Pool, Depends(get_pg_pool)]


async def get_settings(request: Request) -> ServiceSettings:
    """The settings the running app was built with (`app.state.settings`). Each service names
    its own settings class in `SettingsDep` (`crm.deps`, `cem.deps`), so routes see its fields."""
    settings: ServiceSettings = request.app.state.settings
    return settings
