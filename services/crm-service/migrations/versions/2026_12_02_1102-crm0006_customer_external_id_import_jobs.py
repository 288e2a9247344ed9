"""Customers get an optional unique external_id; import jobs keep their upload, progress and refused rows

Revision ID: crm0006
Revises: crm0005
Create Date: 2026-12-02 11:02:58.898455

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cxkit.db

revision: str = "crm0006"
down_revision: str | Sequence[str] | None = "crm0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("chunk_rows", sa.Integer(), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=True),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("done_chunks", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("ignored_columns", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", cxkit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", cxkit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", cxkit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", cxkit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
    )
    op.create_index(op.f("ix_import_jobs_status"), "import_jobs", ["status"], unique=False)
    op.create_table(
        "import_job_errors",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["import_jobs.id"], name=op.f("fk_import_job_errors_job_id_import_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "line", name=op.f("pk_import_job_errors")),
    )
    op.create_table(
        "import_job_parts",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["import_jobs.id"], name=op.f("fk_import_job_parts_job_id_import_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_import_job_parts")),
    )
    op.add_column("customers", sa.Column("external_id", sa.String(length=200), nullable=True))
    # Partial: only customers that have one are in it (likewise for the two indexes below, whose
    # column is null for nearly every customer), so a new customer writes no entry there.
    op.create_index(
        "uq_customers_external_id",
        "customers",
        ["external_id"],
        unique=True,
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    for column in ("merged_into_id", "campaign_id"):
        op.drop_index(f"ix_customers_{column}", table_name="customers")
        op.create_index(f"ix_customers_{column}", "customers", [column], postgresql_where=sa.text(f"{column} IS NOT NULL"))


def downgrade() -> None:
    for column in ("merged_into_id", "campaign_id"):
        op.drop_index(f"ix_customers_{column}", table_name="customers")
        op.create_index(f"ix_customers_{column}", "customers", [column])
    op.drop_index("uq_customers_external_id", table_name="customers")
    op.drop_column("customers", "external_id")
    op.drop_table("import_job_parts")
    op.drop_table("import_job_errors")
    op.drop_index(op.f("ix_import_jobs_status"), table_name="import_jobs")
    op.drop_table("import_jobs")
