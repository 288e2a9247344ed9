"""Webhooks: subscriptions and their deliveries (cxkit.webhooks)

Revision ID: cem0008
Revises: cem0007
Create Date: 2026-12-02 11:30:00

"""

from collections.abc import Sequence

from cxkit.migrations import create_webhook_tables, drop_webhook_tables

revision: str = "cem0008"
down_revision: str | Sequence[str] | None = "cem0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_webhook_tables()


def downgrade() -> None:
    drop_webhook_tables()
