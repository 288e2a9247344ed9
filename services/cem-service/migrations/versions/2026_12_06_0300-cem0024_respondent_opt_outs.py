"""A recipient can ask for no more surveys from any of their links (`/r/{token}/unsubscribe`)

`survey_opt_outs` keeps one row per request: the SHA-256 of the lower-cased address (so the
opt-out outlives an erasure without keeping the address itself) and the customer, when the
invitation went to one. `customer_profiles.opted_out_at` is the CEM's own mark on a customer
who opted out here: the CRM's snapshots set `survey_opt_out` but never clear it while this is
set.

Revision ID: cem0024
Revises: cem0023
Create Date: 2026-12-06 03:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cxkit.db

revision: str = "cem0024"
down_revision: str | Sequence[str] | None = "cem0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customer_profiles", sa.Column("opted_out_at", cxkit.db.UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        "survey_opt_outs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("address_hash", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column("survey_id", sa.Uuid(), nullable=False),
        sa.Column("invitation_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", cxkit.db.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "uq_survey_opt_outs_address_hash",
        "survey_opt_outs",
        ["address_hash"],
        unique=True,
        postgresql_where=sa.text("address_hash IS NOT NULL"),
    )
    op.create_index(
        "ix_survey_opt_outs_customer_id", "survey_opt_outs", ["customer_id"], postgresql_where=sa.text("customer_id IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_table("survey_opt_outs")
    op.drop_column("customer_profiles", "opted_out_at")
