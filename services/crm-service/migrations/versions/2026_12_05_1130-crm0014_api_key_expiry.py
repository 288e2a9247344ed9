"""API keys: an optional expiry, after which the key is refused (cxkit.http.auth)

Revision ID: crm0014
Revises: crm0013
Create Date: 2026-12-05 11:30:00

"""

from collections.abc import Sequence

from cxkit.migrations import add_api_key_expiry, drop_api_key_expiry

revision: str = "crm0014"
down_revision: str | Sequence[str] | None = "crm0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_api_key_expiry()


def downgrade() -> None:
    drop_api_key_expiry()
