"""The models and the migrations agree (a model change without a migration fails here)."""

from __future__ import annotations

import subprocess
import sys

from cem.cli import ALEMBIC_INI


def test_models_match_migrations(cem_database_url: str) -> None:
    code = (
        "import sys; from alembic import command; from cxkit.migrations import alembic_config; from pathlib import Path; "
        "command.check(alembic_config(Path(sys.argv[1]), sys.argv[2]))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(ALEMBIC_INI), cem_database_url], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
