"""The survey opt-outs are listed (`GET /v1/opt-outs`), newest first

An index on (created_at, id) serves the list's pages as index range scans.

Revision ID: cem0025
Revises: cem0024
Create Date: 2026-12-06 06:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "cem0025"
down_revision: str | Sequence[str] | None = "cem0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_survey_opt_outs_created_id", "survey_opt_outs", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_survey_opt_outs_created_id", table_name="survey_opt_outs")
