"""The models and the migrations agree (a model change without a migration fails here)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import asyncpg
import orjson

from cem.cli import ALEMBIC_INI
from cxkit import testing
from cxkit.pg_pool import asyncpg_dsn
from cxkit.platform_models import OUTBOX_STORAGE


def test_models_match_migrations(cem_database_url: str) -> None:
    code = (
        "import sys; from alembic import command; from cxkit.migrations import alembic_config; from pathlib import Path; "
        "command.check(alembic_config(Path(sys.argv[1]), sys.argv[2]))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(ALEMBIC_INI), cem_database_url], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


async def test_the_outbox_is_vacuumed_as_a_queue(cem_database_url: str) -> None:
    """The outbox's autovacuum options are those of OUTBOX_STORAGE (migration cem0005)."""
    [row] = await testing.db_rows(cem_database_url, "SELECT reloptions FROM pg_class WHERE relname = 'outbox'")
    assert set(row["reloptions"]) == {f"{k}={v}" for k, v in OUTBOX_STORAGE.items()}


async def test_judged_interactions_are_found_by_index(cem_database_url: str) -> None:
    """The consumer's per-poll "which of these interactions were judged" lookup reads the unique
    indexes led by interaction_id (migration cem0006), not the whole tables."""
    conn = await asyncpg.connect(asyncpg_dsn(cem_database_url))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            ids = [uuid.uuid4() for _ in range(3)]
            for table in ("invitations", "suppressions"):
                raw = await conn.fetchval(
                    f"EXPLAIN (FORMAT JSON) SELECT survey_id, interaction_id FROM {table} WHERE interaction_id = ANY($1::uuid[])",
                    ids,
                )
                scans = [n for n in testing.plan_nodes(orjson.loads(raw)[0]["Plan"]) if "Index Name" in n]
                assert [s["Index Name"] for s in scans] == [f"uq_{table}_interaction_survey"], scans
                assert "interaction_id" in scans[0]["Index Cond"], scans
    finally:
        await conn.close()
