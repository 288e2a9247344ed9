"""Reminder links: each reminder hands out a link of its own to the invitation (only its hash stored)

Revision ID: cem0013
Revises: cem0012
Create Date: 2026-12-05 01:15:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cxkit.db

revision: str = "cem0013"
down_revision: str | Sequence[str] | None = "cem0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invitation_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invitation_id", sa.Uuid(), nullable=False),
        sa.Column("reminder", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", cxkit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invitation_id"],
            ["invitations.id"],
            name=op.f("fk_invitation_links_invitation_id_invitations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_invitation_links")),
    )
    op.create_index(op.f("ix_invitation_links_invitation_id"), "invitation_links", ["invitation_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_invitation_links_invitation_id"), table_name="invitation_links")
    op.drop_table("invitation_links")
