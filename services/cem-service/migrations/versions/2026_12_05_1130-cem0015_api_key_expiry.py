"""API keys: an optional expiry, after which the key is refused (cxkit.http.auth)

Revision ID: cem0015
Revises: cem0014
Create Date: 2026-12-05 11:30:00

"""

from collections.abc import Sequence

from cxkit.migrations import add_api_key_expiry, drop_api_key_expiry

revision: str = "cem0015"
down_revision: str | Sequence[str] | None = "cem0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_api_key_expiry()


def downgrade() -> None:
    drop_api_key_expiry()
