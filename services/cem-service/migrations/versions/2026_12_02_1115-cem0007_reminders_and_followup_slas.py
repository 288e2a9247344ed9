"""Reminders (a survey's `reminders`, counted per invitation), follow-up SLAs (due and overdue times)
and re-surveys after a follow-up is closed

Revision ID: cem0007
Revises: cem0006
Create Date: 2026-12-02 11:15:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cxkit.db

revision: str = "cem0007"
down_revision: str | Sequence[str] | None = "cem0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("surveys", sa.Column("reminder_after_days", sa.Integer(), nullable=True))
    op.add_column("surveys", sa.Column("reminder_max", sa.Integer(), nullable=True))
    op.add_column("surveys", sa.Column("followup_sla", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("surveys", sa.Column("resurvey_after_days", sa.Integer(), nullable=True))
    # A constant default: PostgreSQL adds it without rewriting the table.
    op.add_column("invitations", sa.Column("reminders_sent", sa.SmallInteger(), server_default=sa.text("0"), nullable=False))
    op.add_column("invitations", sa.Column("last_reminded_at", cxkit.db.UTCDateTime(timezone=True), nullable=True))
    op.add_column("invitations", sa.Column("reminder_judged_at", cxkit.db.UTCDateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_invitations_survey_unanswered",
        "invitations",
        ["survey_id", "expires_at"],
        postgresql_where=sa.text("answered_at IS NULL AND cancelled_at IS NULL AND sent_at IS NOT NULL"),
    )
    op.add_column("followups", sa.Column("due_at", cxkit.db.UTCDateTime(timezone=True), nullable=True))
    op.add_column("followups", sa.Column("overdue_at", cxkit.db.UTCDateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_followups_due_open", "followups", ["due_at"], postgresql_where=sa.text("status = 'open' AND overdue_at IS NULL")
    )
    op.add_column("followups", sa.Column("resurveyed_at", cxkit.db.UTCDateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_followups_survey_closed_to_resurvey",
        "followups",
        ["survey_id", "closed_at"],
        postgresql_where=sa.text("status = 'closed' AND resurveyed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_followups_survey_closed_to_resurvey", table_name="followups")
    op.drop_column("followups", "resurveyed_at")
    op.drop_index("ix_followups_due_open", table_name="followups")
    op.drop_column("followups", "overdue_at")
    op.drop_column("followups", "due_at")
    op.drop_index("ix_invitations_survey_unanswered", table_name="invitations")
    op.drop_column("invitations", "reminder_judged_at")
    op.drop_column("invitations", "last_reminded_at")
    op.drop_column("invitations", "reminders_sent")
    op.drop_column("surveys", "resurvey_after_days")
    op.drop_column("surveys", "followup_sla")
    op.drop_column("surveys", "reminder_max")
    op.drop_column("surveys", "reminder_after_days")
