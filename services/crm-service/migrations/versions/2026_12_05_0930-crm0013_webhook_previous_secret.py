"""Webhook subscriptions: the secret a rotation replaced, signing beside the new one until it expires (cxkit.webhooks)

Revision ID: crm0013
Revises: crm0012
Create Date: 2026-12-05 09:30:00

"""

from collections.abc import Sequence

from cxkit.migrations import add_webhook_previous_secret, drop_webhook_previous_secret

revision: str = "crm0013"
down_revision: str | Sequence[str] | None = "crm0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_webhook_previous_secret()


def downgrade() -> None:
    drop_webhook_previous_secret()
