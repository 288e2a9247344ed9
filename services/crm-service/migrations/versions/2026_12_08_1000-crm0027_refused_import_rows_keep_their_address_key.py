"""An import's refused rows keep their address's key (`address_key`, made in Python), by which
the erasure of the address's customer finds them

A row an import job refused (its email taken, repeated in the file, invalid) kept the address as
written, and a taken email's reason named it again; `GET /v1/imports/{id}/errors` served both
for `CRM_IMPORTS_RETENTION_DAYS` after the job ended, whatever became of the customer: nothing
erased them. The erasure now finds the rows by the key, written with each row, and takes the
address out of them.

The backfill keys ASCII addresses in SQL (lower() under the "C" collation changes A-Z only, as
`str.lower()` does on ASCII, and btrim(' ') is `str.strip()` on printable ASCII); any other
address is keyed in Python, a batch at a time (as cem0029). A row stored before this revision is
keyed from its address as written: as the service keys a refused row whose address it could not
validate. The table is locked for the backfill (the column is added in the same transaction): a
running job's next chunk waits, nothing is lost.

Revision ID: crm0027
Revises: crm0026
Create Date: 2026-12-08 10:00:00

"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "crm0027"
down_revision: str | Sequence[str] | None = "crm0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_import_job_errors_address_key"
BATCH = 1000


def address_key(email: str) -> str:
    """`cxkit.fields.address_key` as of this revision (a migration does not follow the code)."""
    return email.strip().lower()


def _backfill() -> None:
    bind = op.get_bind()
    # Printable ASCII only (the range read as code points under "C").
    bind.execute(
        sa.text(
            "UPDATE import_job_errors SET address_key = lower(btrim(email, ' ') COLLATE \"C\") "
            "WHERE email IS NOT NULL AND email COLLATE \"C\" ~ '^[ -~]*$'"
        )
    )
    pending = sa.text(
        "SELECT job_id, line, email FROM import_job_errors WHERE email IS NOT NULL AND address_key IS NULL "
        "AND (job_id, line) > (:job, :line) ORDER BY job_id, line LIMIT :n"
    ).bindparams(sa.bindparam("job", type_=sa.Uuid()))
    keyed = sa.text(
        "UPDATE import_job_errors e SET address_key = keyed.key FROM unnest(:jobs, :lines, :keys) AS keyed(job_id, line, key) "
        "WHERE e.job_id = keyed.job_id AND e.line = keyed.line"
    ).bindparams(
        sa.bindparam("jobs", type_=postgresql.ARRAY(sa.Uuid())),
        sa.bindparam("lines", type_=postgresql.ARRAY(sa.Integer())),
        sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text())),
    )
    after: tuple[uuid.UUID, int] = (uuid.UUID(int=0), 0)
    while rows := bind.execute(pending, {"job": after[0], "line": after[1], "n": BATCH}).all():
        bind.execute(
            keyed,
            {"jobs": [r.job_id for r in rows], "lines": [r.line for r in rows], "keys": [address_key(r.email) for r in rows]},
        )
        after = (rows[-1].job_id, rows[-1].line)


def upgrade() -> None:
    op.add_column("import_job_errors", sa.Column("address_key", sa.Text(), nullable=True))
    _backfill()
    op.create_index(INDEX, "import_job_errors", ["address_key"], postgresql_where=sa.text("address_key IS NOT NULL"))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="import_job_errors")
    op.drop_column("import_job_errors", "address_key")
