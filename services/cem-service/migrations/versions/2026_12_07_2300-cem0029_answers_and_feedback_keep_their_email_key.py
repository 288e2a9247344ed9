"""Answers and feedback keep their address's key (`email_lower`, made in Python); their unlinked
address indexes are on it instead of lower(email)

The CEM keys an address with Python's `str.lower()` (`cem.customers.models.email_key`: customer
profiles, invitations, interactions, suppressions) but found answers and feedback kept under an
address by PostgreSQL's lower(email), which folds some letters otherwise ('İ' to 'i' where Python
gives 'i' and a combining dot; a capital sigma ending a word to U+03C3 where Python gives the
final sigma U+03C2). Such an answer or piece of feedback was never linked to the customer the CRM
announced with its address, and the customer's erasure and data export missed it: its address
and free text outlived the erasure. Each row now stores the key, written with the row, and every
comparison reads it.

The backfill folds ASCII addresses in SQL (lower() under the "C" collation changes A-Z only, as
`str.lower()` does on ASCII, and btrim(' ') is `str.strip()` on printable ASCII); any other
address is folded in Python, a batch at a time. The tables' statement triggers (experience
totals, answer days) are off for the backfill: it changes no figure, and they would read every
row it rewrites twice. The tables are locked for the backfill (the column is added in the same
transaction): answers and feedback wait, nothing is lost.

Revision ID: cem0029
Revises: cem0028
Create Date: 2026-12-07 23:00:00

"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "cem0029"
down_revision: str | Sequence[str] | None = "cem0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> its index of the rows without a customer, and its UPDATE statement triggers.
TABLES = {
    "responses": ("ix_responses_unlinked_email", ("experience_totals_update", "answer_days_update")),
    "feedback": ("ix_feedback_unlinked_email", ("experience_totals_update",)),
}
BATCH = 1000


def email_key(email: str) -> str:
    """`cem.customers.models.email_key` as of this revision (a migration does not follow the code)."""
    return email.strip().lower()


def _backfill(table: str) -> None:
    bind = op.get_bind()
    # Printable ASCII only (the range read as code points under "C").
    bind.execute(
        sa.text(
            f"UPDATE {table} SET email_lower = lower(btrim(email, ' ') COLLATE \"C\") "
            "WHERE email IS NOT NULL AND email COLLATE \"C\" ~ '^[ -~]*$'"
        )
    )
    pending = sa.text(
        f"SELECT id, email FROM {table} WHERE email IS NOT NULL AND email_lower IS NULL AND id > :after ORDER BY id LIMIT :n"
    ).bindparams(sa.bindparam("after", type_=sa.Uuid()))
    keyed = sa.text(
        f"UPDATE {table} SET email_lower = keyed.key FROM unnest(:ids, :keys) AS keyed(id, key) WHERE {table}.id = keyed.id"
    ).bindparams(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Uuid())), sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text())))
    after = uuid.UUID(int=0)
    while rows := bind.execute(pending, {"after": after, "n": BATCH}).all():
        bind.execute(keyed, {"ids": [r.id for r in rows], "keys": [email_key(r.email) for r in rows]})
        after = rows[-1].id


def upgrade() -> None:
    for table, (index, triggers) in TABLES.items():
        op.add_column(table, sa.Column("email_lower", sa.String(length=320), nullable=True))
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"DISABLE TRIGGER {t}" for t in triggers))
        _backfill(table)
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ENABLE TRIGGER {t}" for t in triggers))
        op.drop_index(index, table_name=table)
        op.create_index(index, table, ["email_lower"], postgresql_where=sa.text("customer_id IS NULL"))


def downgrade() -> None:
    for table, (index, _) in TABLES.items():
        op.drop_index(index, table_name=table)
        op.create_index(index, table, [sa.text("lower(email)")], postgresql_where=sa.text("customer_id IS NULL"))
        op.drop_column(table, "email_lower")
