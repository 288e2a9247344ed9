"""The outbox vacuumed as the queue it is (see cxkit.platform_models.OUTBOX_STORAGE)

Revision ID: cem0005
Revises: cem0004
Create Date: 2026-12-02 05:30:00

"""

from collections.abc import Sequence

from alembic import op

from cxkit.migrations import outbox_storage_sql

revision: str = "cem0005"
down_revision: str | Sequence[str] | None = "cem0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(outbox_storage_sql())


def downgrade() -> None:
    op.execute(outbox_storage_sql(reset=True))
