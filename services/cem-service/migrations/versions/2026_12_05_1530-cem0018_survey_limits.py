"""Surveys that close by themselves: closes_at (a moment) and max_responses (a number of answers)

Revision ID: cem0018
Revises: cem0017
Create Date: 2026-12-05 15:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cxkit.db import UTCDateTime

revision: str = "cem0018"
down_revision: str | Sequence[str] | None = "cem0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("surveys", sa.Column("closes_at", UTCDateTime(), nullable=True))
    op.add_column("surveys", sa.Column("max_responses", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("surveys", "max_responses")
    op.drop_column("surveys", "closes_at")
