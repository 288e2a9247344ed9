"""Alembic plumbing both services use: async env.py body and a programmatic upgrade."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def run_env(target_metadata: MetaData, default_url: str) -> None:
    """The body of a service's migrations/env.py (online mode, async engine)."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url") or default_url

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
        )
        with context.begin_transaction():
            # Never queue behind a long transaction and block the app's traffic.
            connection.execute(text("SET lock_timeout = '5s'"))
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_async())


def alembic_config(ini_path: Path, database_url: str) -> Config:
    cfg = Config(str(ini_path))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(ini_path: Path, database_url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(ini_path, database_url), revision)


def outbox_storage_sql(*, reset: bool = False) -> str:
    """`ALTER TABLE outbox` setting (or with `reset`, resetting) the autovacuum options of
    `cxkit.platform_models.OUTBOX_STORAGE`, for a service's migration."""
    from cxkit.platform_models import OUTBOX_STORAGE

    if reset:
        return "ALTER TABLE outbox RESET (" + ", ".join(OUTBOX_STORAGE) + ")"
    return "ALTER TABLE outbox SET (" + ", ".join(f"{k} = {v}" for k, v in OUTBOX_STORAGE.items()) + ")"
