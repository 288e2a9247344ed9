"""Tasks, deals and leads: an index on (updated_at, id) for the lists' updated_from window and sort=updated_at

Revision ID: crm0015
Revises: crm0014
Create Date: 2026-12-05 12:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "crm0015"
down_revision: str | Sequence[str] | None = "crm0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("tasks", "deals", "leads")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_updated_at_id", table, ["updated_at", "id"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_updated_at_id", table_name=table)
