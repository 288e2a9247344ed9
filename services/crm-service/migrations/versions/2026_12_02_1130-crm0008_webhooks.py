"""Webhooks: subscriptions and their deliveries (cxkit.webhooks)

Revision ID: crm0008
Revises: crm0007
Create Date: 2026-12-02 11:30:00

"""

from collections.abc import Sequence

from cxkit.migrations import create_webhook_tables, drop_webhook_tables

revision: str = "crm0008"
down_revision: str | Sequence[str] | None = "crm0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_webhook_tables()


def downgrade() -> None:
    drop_webhook_tables()
