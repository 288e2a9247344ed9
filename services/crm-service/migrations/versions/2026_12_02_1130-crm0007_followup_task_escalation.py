"""Follow-up tasks escalated when the CEM reports them overdue: a second owner and when

Revision ID: crm0007
Revises: crm0006
Create Date: 2026-12-02 11:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cxkit.db

revision: str = "crm0007"
down_revision: str | Sequence[str] | None = "crm0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("tasks", sa.Column("escalated_to", sa.String(length=200), nullable=True))
    op.add_column("tasks", sa.Column("escalated_at", cxkit.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "escalated_at")
    op.drop_column("tasks", "escalated_to")
