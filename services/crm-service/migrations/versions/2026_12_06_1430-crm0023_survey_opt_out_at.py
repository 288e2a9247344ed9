"""When a customer's survey_opt_out was last asked for: a stale wish no longer overrides a newer one

`survey.opted_out` and `survey.opted_in` set and clear `survey_opt_out` in the order they are
applied. One applied late (sent again from the DLQ after its cause was fixed, or redelivered
after the processed-event ids were deleted) overrode whatever came after it: a customer who had
opted back in, or whom a user had set by hand since, was opted out again.

`survey_opt_out_at` is the time of the wish the flag stands for. The consumer writes the wish's
own time (`opted_out_at` / `opted_in_at`) and applies a wish only if it is newer; every other
change of the flag (a PATCH, a batch upsert, an import, a merge, any path added later) is dated
by the trigger below, at its transaction's time, so no path can forget it. While a customer's
flag is as it was created (and for every customer before this migration) the time is NULL: any
wish applies, as before.

The history trigger (crm0016) leaves the new column out, as it does the other bookkeeping.

Revision ID: crm0023
Revises: crm0022
Create Date: 2026-12-06 14:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crm0023"
down_revision: str | Sequence[str] | None = "crm0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with crm.customers.models.UNTRACKED_FIELDS and ERASED_FIELDS.
RECORD_CHANGE = """
CREATE OR REPLACE FUNCTION record_customer_change() RETURNS trigger
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
       AND n.key <> ALL (ARRAY['id', 'version', 'created_at', 'updated_at', 'email_normalized', 'survey_opt_out_at']);
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

# The function as crm0016 made it, for the downgrade.
RECORD_CHANGE_BEFORE = RECORD_CHANGE.replace(", 'survey_opt_out_at'", "")

DATE_CHANGE = """
CREATE FUNCTION date_survey_opt_out() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.survey_opt_out_at := now();
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.add_column("customers", sa.Column("survey_opt_out_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(RECORD_CHANGE)
    op.execute(DATE_CHANGE)
    # Fires only where the flag changes and the writer did not date the change itself.
    op.execute(
        "CREATE TRIGGER customers_date_survey_opt_out BEFORE UPDATE OF survey_opt_out ON customers FOR EACH ROW "
        "WHEN (NEW.survey_opt_out IS DISTINCT FROM OLD.survey_opt_out "
        "AND NEW.survey_opt_out_at IS NOT DISTINCT FROM OLD.survey_opt_out_at) "
        "EXECUTE FUNCTION date_survey_opt_out()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER customers_date_survey_opt_out ON customers")
    op.execute("DROP FUNCTION date_survey_opt_out()")
    op.execute(RECORD_CHANGE_BEFORE)
    op.drop_column("customers", "survey_opt_out_at")
