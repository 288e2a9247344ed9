"""The models and the migrations agree (a model change without a migration fails here)."""

from __future__ import annotations

import subprocess
import sys

from crm.cli import ALEMBIC_INI
from cxkit import testing
from cxkit.platform_models import OUTBOX_FILLFACTOR, OUTBOX_STORAGE


def test_models_match_migrations(crm_database_url: str) -> None:
    code = (
        "import sys; from alembic import command; from cxkit.migrations import alembic_config; from pathlib import Path; "
        "command.check(alembic_config(Path(sys.argv[1]), sys.argv[2]))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(ALEMBIC_INI), crm_database_url], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


async def test_the_outbox_is_stored_and_vacuumed_as_a_queue(crm_database_url: str) -> None:
    """The outbox's autovacuum options are those of OUTBOX_STORAGE and its fill factor is the
    model's OUTBOX_FILLFACTOR (migrations crm0005, crm0010)."""
    [row] = await testing.db_rows(crm_database_url, "SELECT reloptions FROM pg_class WHERE relname = 'outbox'")
    expected = {f"{k}={v}" for k, v in OUTBOX_STORAGE.items()} | {f"fillfactor={OUTBOX_FILLFACTOR}"}
    assert set(row["reloptions"]) == expected
