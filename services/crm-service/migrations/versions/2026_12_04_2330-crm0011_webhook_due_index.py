"""Webhook deliveries: the index the worker claims due deliveries from (cxkit.webhooks)

Revision ID: crm0011
Revises: crm0010
Create Date: 2026-12-04 23:30:00

"""

from collections.abc import Sequence

from cxkit.migrations import create_webhook_due_index, drop_webhook_due_index

revision: str = "crm0011"
down_revision: str | Sequence[str] | None = "crm0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_webhook_due_index()


def downgrade() -> None:
    drop_webhook_due_index()
