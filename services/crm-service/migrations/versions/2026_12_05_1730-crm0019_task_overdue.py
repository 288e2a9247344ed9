"""Tasks announce their passing due time: tasks.overdue_announced_at and the index of those to announce

Revision ID: crm0019
Revises: crm0018
Create Date: 2026-12-05 17:30:00

`task.overdue` is announced once when an open task's due time passes; `overdue_announced_at`
says it was, and a partial index holds only the open tasks with a due time not announced yet,
so the periodic pass reads just those however many tasks there are.

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crm0019"
down_revision: str | Sequence[str] | None = "crm0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("overdue_announced_at", sa.DateTime(timezone=True), nullable=True))
    # Tasks already past their due time when this arrives are not announced all at once.
    op.execute("UPDATE tasks SET overdue_announced_at = now() WHERE status = 'open' AND due_at < now()")
    op.create_index(
        "ix_tasks_due_at_unannounced",
        "tasks",
        ["due_at"],
        postgresql_where=sa.text("status = 'open' AND due_at IS NOT NULL AND overdue_announced_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_due_at_unannounced", table_name="tasks")
    op.drop_column("tasks", "overdue_announced_at")
