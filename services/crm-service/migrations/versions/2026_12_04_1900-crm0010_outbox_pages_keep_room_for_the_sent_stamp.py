"""Outbox pages keep room for the sent stamp (see cxkit.platform_models.OUTBOX_FILLFACTOR)

Revision ID: crm0010
Revises: crm0009
Create Date: 2026-12-04 19:00:00

"""

from collections.abc import Sequence

from alembic import op

from cxkit.migrations import outbox_storage_sql
from cxkit.platform_models import OUTBOX_FILLFACTOR

revision: str = "crm0010"
down_revision: str | Sequence[str] | None = "crm0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(outbox_storage_sql({"fillfactor": OUTBOX_FILLFACTOR}))


def downgrade() -> None:
    op.execute(outbox_storage_sql({"fillfactor": OUTBOX_FILLFACTOR}, reset=True))
