"""Outbox pages keep room for the sent stamp (see cxkit.platform_models.OUTBOX_FILLFACTOR)

Revision ID: cem0011
Revises: cem0010
Create Date: 2026-12-04 19:00:00

"""

from collections.abc import Sequence

from alembic import op

from cxkit.migrations import outbox_storage_sql
from cxkit.platform_models import OUTBOX_FILLFACTOR

revision: str = "cem0011"
down_revision: str | Sequence[str] | None = "cem0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(outbox_storage_sql({"fillfactor": OUTBOX_FILLFACTOR}))


def downgrade() -> None:
    op.execute(outbox_storage_sql({"fillfactor": OUTBOX_FILLFACTOR}, reset=True))
