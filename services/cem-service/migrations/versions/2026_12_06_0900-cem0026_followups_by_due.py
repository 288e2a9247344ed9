"""Follow-ups can be listed by due time (`GET /v1/followups?sort=due_at`)

An index on (status, due_at, id) serves the pages of the open follow-ups by urgency, and the
overdue ones (`overdue=true`: open, due before now) as an index range scan, however many there are.

Revision ID: cem0026
Revises: cem0025
Create Date: 2026-12-06 09:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "cem0026"
down_revision: str | Sequence[str] | None = "cem0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_followups_status_due_id", "followups", ["status", "due_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_followups_status_due_id", table_name="followups")
