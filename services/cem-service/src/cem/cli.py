"""`cem` admin CLI."""

from __future__ import annotations

from pathlib import Path

from cem.config import CEMSettings
from cem.db import ApiKey
from cxkit.cli import build_cli

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"

app = build_cli("cem", CEMSettings, ALEMBIC_INI, ApiKey)

if __name__ == "__main__":
    app()
