"""Surveys that open by themselves: opens_at (a draft becomes active at that moment)

Revision ID: cem0019
Revises: cem0018
Create Date: 2026-12-05 16:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cxkit.db import UTCDateTime

revision: str = "cem0019"
down_revision: str | Sequence[str] | None = "cem0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("surveys", sa.Column("opens_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("surveys", "opens_at")
