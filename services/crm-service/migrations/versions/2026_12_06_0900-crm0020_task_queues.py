"""The open tasks by due time: indexes on (status, due_at, id) and (owner, status, due_at, id)

Revision ID: crm0020
Revises: crm0019
Create Date: 2026-12-06 09:00:00

`GET /v1/tasks?status=open` (sorted by `due_at`, the default; with `due_before`, the overdue
list) walked the (due_at, id) index from the oldest due time, dropping every completed task on
the way: at 1,000,000 tasks with the open ones recent, 130,000 rows and about 300 ms for the first
page. (status, due_at, id) reads the open ones alone, in order. A rep's queue (`owner=...&
status=open`) gets the same from (owner, status, due_at, id), which replaces (owner, status):
it serves every lookup that one did.

"""

from collections.abc import Sequence

from alembic import op

revision: str = "crm0020"
down_revision: str | Sequence[str] | None = "crm0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_status_due_at_id", "tasks", ["status", "due_at", "id"])
    op.create_index("ix_tasks_owner_status_due_at_id", "tasks", ["owner", "status", "due_at", "id"])
    op.drop_index("ix_tasks_owner_status", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_owner_status", "tasks", ["owner", "status"])
    op.drop_index("ix_tasks_owner_status_due_at_id", table_name="tasks")
    op.drop_index("ix_tasks_status_due_at_id", table_name="tasks")
