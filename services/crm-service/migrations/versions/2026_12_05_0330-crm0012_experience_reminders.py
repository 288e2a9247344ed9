"""Experience projection: which reminder a `survey.reminded` row is

The projection now keeps `survey.reminded` and `survey.invitation_cancelled` as well; only the
reminder's number needs a column of its own. `crm replay` fills in the reminders announced
before this revision.

Revision ID: crm0012
Revises: crm0011
Create Date: 2026-12-05 03:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crm0012"
down_revision: str | Sequence[str] | None = "crm0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("experience_events", sa.Column("reminder", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM experience_events WHERE kind IN ('survey.reminded', 'survey.invitation_cancelled')")
    op.drop_column("experience_events", "reminder")
