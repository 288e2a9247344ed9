"""Surveys: the respondents' language (the respondent page's own words), English for every survey so far

Revision ID: cem0016
Revises: cem0015
Create Date: 2026-12-05 14:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0016"
down_revision: str | Sequence[str] | None = "cem0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column("surveys", sa.Column("language", sa.String(length=8), server_default="en", nullable=False))


def downgrade() -> None:
    op.drop_column("surveys", "language")
