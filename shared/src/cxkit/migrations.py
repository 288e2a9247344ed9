"""Alembic plumbing both services use: async env.py body and a programmatic upgrade."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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


def outbox_storage_sql(options: Mapping[str, object] | None = None, *, reset: bool = False) -> str:
    """`ALTER TABLE outbox` setting (or with `reset`, resetting) storage options, for a service's
    migration: `options`, else the autovacuum options of `cxkit.platform_models.OUTBOX_STORAGE`.
    Nothing is rewritten (a new fill factor applies to pages written from then on), and writes
    do not wait for it (the statement takes a SHARE UPDATE EXCLUSIVE lock)."""
    from cxkit.platform_models import OUTBOX_STORAGE

    chosen = OUTBOX_STORAGE if options is None else options
    if reset:
        return "ALTER TABLE outbox RESET (" + ", ".join(chosen) + ")"
    return "ALTER TABLE outbox SET (" + ", ".join(f"{k} = {v}" for k, v in chosen.items()) + ")"


def create_webhook_tables() -> None:
    """The tables of `cxkit.webhooks.models` as they were first shipped (both services'
    migrations call this, so the two schemas stay the same)."""
    import sqlalchemy as sa
    from alembic import op
    from sqlalchemy.dialects import postgresql

    from cxkit.db import UTCDateTime

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("webhook_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("ordering_key", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_duration_ms", sa.Integer(), nullable=True),
        sa.Column("attempt_log", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("seq", name=op.f("uq_webhook_deliveries_seq")),
    )
    op.create_index(
        "uq_webhook_deliveries_subscription_webhook", "webhook_deliveries", ["subscription_id", "webhook_id"], unique=True
    )
    op.create_index("ix_webhook_deliveries_subscription_seq", "webhook_deliveries", ["subscription_id", "seq"])
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["subscription_id", "ordering_key", "seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def drop_webhook_tables() -> None:
    from alembic import op

    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")


def add_webhook_previous_secret() -> None:
    """The secret a rotation replaced, signing beside the new one until it expires (both
    services' migrations call this)."""
    import sqlalchemy as sa
    from alembic import op

    from cxkit.db import UTCDateTime

    op.add_column("webhook_subscriptions", sa.Column("previous_secret", sa.String(length=100), nullable=True))
    op.add_column("webhook_subscriptions", sa.Column("previous_secret_expires_at", UTCDateTime(), nullable=True))


def drop_webhook_previous_secret() -> None:
    from alembic import op

    op.drop_column("webhook_subscriptions", "previous_secret_expires_at")
    op.drop_column("webhook_subscriptions", "previous_secret")


def add_api_key_expiry() -> None:
    """`api_keys.expires_at`: a key is refused from then on (both services' migrations call this)."""
    import sqlalchemy as sa
    from alembic import op

    from cxkit.db import UTCDateTime

    op.add_column("api_keys", sa.Column("expires_at", UTCDateTime(), nullable=True))


def drop_api_key_expiry() -> None:
    from alembic import op

    op.drop_column("api_keys", "expires_at")


def create_webhook_due_index() -> None:
    """The index the delivery worker claims from, as first shipped (both services' migrations
    call this): pending deliveries that are due at some time, in the order they come due.
    Deliveries waiting behind an earlier one of their customer have no due time and are not in
    it (see `cxkit.webhooks.delivery`)."""
    import sqlalchemy as sa
    from alembic import op

    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at", "seq"],
        postgresql_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
    )


def drop_webhook_due_index() -> None:
    from alembic import op

    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")


def create_processed_events_time_index() -> None:
    """A BRIN index on `processed_events.processed_at` (both services' migrations call this):
    the housekeeping deletes the ids of events applied longer ago than
    PROCESSED_EVENTS_RETENTION_DAYS through it."""
    from alembic import op

    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"], postgresql_using="brin")


def drop_processed_events_time_index() -> None:
    from alembic import op

    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")


# Names of a table that differ only by case, if any, stop the upgrade with their list (in SQL, so
# that an offline `alembic upgrade --sql` script stops the same way).
_REFUSE_CASE_CLASHES = """
DO $$
DECLARE
    clashes text;
BEGIN
    SELECT string_agg(names, '; ') INTO clashes FROM (
        SELECT string_agg(quote_literal(name), ', ' ORDER BY name) AS names FROM {table}
        GROUP BY lower(name) HAVING count(*) > 1 ORDER BY lower(name) LIMIT 20
    ) AS clash;
    IF clashes IS NOT NULL THEN
        RAISE EXCEPTION '{noun} names that differ only by case: %', clashes
            USING HINT = 'Rename all but one of each ({rename}), then migrate again.';
    END IF;
END
$$
"""


def names_unique_whatever_their_case(table: str, *, constraint: str, index: str, noun: str, rename: str) -> None:
    """Replace the unique `constraint` on `table.name` as typed by the unique `index` on
    lower(name), so that the database itself refuses a name another row has in any case (the
    crm's campaigns, crm0025, and pipelines, crm0026). The table is locked first, so no row is
    added or renamed between the check and the index; names differing only by case, if any,
    stop the upgrade and are named (`noun` names the rows, `rename` how to rename one)."""
    from alembic import op
    from sqlalchemy import text as sql

    op.execute(f"LOCK TABLE {table} IN SHARE MODE")
    op.execute(_REFUSE_CASE_CLASHES.format(table=table, noun=noun, rename=rename))
    op.create_index(index, table, [sql("lower(name)")], unique=True)
    op.drop_constraint(constraint, table, type_="unique")


def names_unique_as_typed(table: str, *, constraint: str, index: str) -> None:
    """Undo `names_unique_whatever_their_case`: names unique whatever their case are unique as
    typed too, so this cannot fail."""
    from alembic import op

    op.create_unique_constraint(constraint, table, ["name"])
    op.drop_index(index, table_name=table)
