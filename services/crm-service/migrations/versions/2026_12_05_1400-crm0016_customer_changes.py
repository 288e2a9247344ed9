"""A customer's field history: customer_changes, written by a trigger on every change

Revision ID: crm0016
Revises: crm0015
Create Date: 2026-12-05 14:00:00

Every UPDATE of a customer that changes a field (a PATCH, a batch upsert, a merge, an erasure, a
lead conversion or a deal moving the lifecycle stage, and any path added later) writes one row:
the fields that changed with their old and new values, the version, when, and who and how as
the transaction's settings `crm.changed_by` and `crm.change_via` say (NULL when unset). A
trigger and not the application, so no path can forget it. Inserts are not recorded (the
record's own values and `created_at` say how it began), so an import writes nothing here.

An erasure blanks the personal fields' values in the customer's whole history (the fields
stay listed as changed, with null values), in the same statement as the erasure itself.

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "crm0016"
down_revision: str | Sequence[str] | None = "crm0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with crm.customers.models.UNTRACKED_FIELDS and ERASED_FIELDS.
CREATE_FUNCTION = """
CREATE FUNCTION record_customer_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    diff jsonb;
    erased CONSTANT text[] := ARRAY['email', 'name', 'phone', 'company', 'attributes'];
BEGIN
    SELECT jsonb_object_agg(n.key, jsonb_build_object('from', o.value, 'to', n.value))
      INTO diff
      FROM jsonb_each(to_jsonb(NEW)) n
      JOIN jsonb_each(to_jsonb(OLD)) o USING (key)
     WHERE n.value IS DISTINCT FROM o.value
       AND n.key <> ALL (ARRAY['id', 'version', 'created_at', 'updated_at', 'email_normalized']);
    IF diff IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.erased_at IS NOT NULL AND OLD.erased_at IS NULL THEN
        UPDATE customer_changes
           SET changes = (SELECT jsonb_object_agg(key, CASE WHEN key = ANY (erased)
                                  THEN '{"from": null, "to": null}'::jsonb ELSE value END)
                            FROM jsonb_each(changes))
         WHERE customer_id = NEW.id AND changes ?| erased;
        SELECT jsonb_object_agg(key, CASE WHEN key = ANY (erased)
                   THEN '{"from": null, "to": null}'::jsonb ELSE value END)
          INTO diff
          FROM jsonb_each(diff);
    END IF;
    INSERT INTO customer_changes (customer_id, version, changed_at, changed_by, via, changes)
    VALUES (
        NEW.id,
        NEW.version,
        CASE WHEN NEW.updated_at IS DISTINCT FROM OLD.updated_at THEN NEW.updated_at ELSE now() END,
        nullif(current_setting('crm.changed_by', true), ''),
        nullif(current_setting('crm.change_via', true), ''),
        diff
    );
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "customer_changes",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.Text(), nullable=True),
        sa.Column("via", sa.String(length=30), nullable=True),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_customer_changes_customer_id_seq", "customer_changes", ["customer_id", "seq"])
    op.execute(CREATE_FUNCTION)
    op.execute(
        "CREATE TRIGGER customers_record_change AFTER UPDATE ON customers "
        "FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION record_customer_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER customers_record_change ON customers")
    op.execute("DROP FUNCTION record_customer_change()")
    op.drop_index("ix_customer_changes_customer_id_seq", table_name="customer_changes")
    op.drop_table("customer_changes")
