"""The outbox vacuumed as the queue it is (see cxkit.platform_models.OUTBOX_STORAGE)

Revision ID: cem0005
Revises: cem0004
Create Date: 2026-12-02 05:30:00

"""

from collections.abc import Sequence

from alembic import op

from cxkit.platform_models import OUTBOX_STORAGE

revision: str = "cem0005"
down_revision: str | Sequence[str] | None = "cem0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE outbox SET (" + ", ".join(f"{k} = {v}" for k, v in OUTBOX_STORAGE.items()) + ")")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox RESET (" + ", ".join(OUTBOX_STORAGE) + ")")
