"""Campaign names unique whatever their case: a unique index on lower(name) instead of the
constraint on the name as typed

The service refuses a name another campaign has in any case ("SPRING" when "Spring" exists),
but checked it with a SELECT before its INSERT: two concurrent creates (or renames) both
passed it. With the same name, the constraint refused the second at INSERT (a 500); with
names differing by case, both were stored. The index makes the rule the database's own, and
the service answers its violation with the same 409 as the check.

The service never stored two names differing only by case, so none should exist; if some do
(written around the API), the upgrade stops and names them rather than choosing for anyone.

Revision ID: crm0025
Revises: crm0024
Create Date: 2026-12-07 13:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crm0025"
down_revision: str | Sequence[str] | None = "crm0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_campaigns_name_lower"
CONSTRAINT = "uq_campaigns_name"
# Names that differ only by case, if any, stop the upgrade with their list (in SQL, so that an
# offline `alembic upgrade --sql` script stops the same way).
_REFUSE_CLASHES = """
DO $$
DECLARE
    clashes text;
BEGIN
    SELECT string_agg(names, '; ') INTO clashes FROM (
        SELECT string_agg(quote_literal(name), ', ' ORDER BY name) AS names FROM campaigns
        GROUP BY lower(name) HAVING count(*) > 1 ORDER BY lower(name) LIMIT 20
    ) AS clash;
    IF clashes IS NOT NULL THEN
        RAISE EXCEPTION 'campaign names that differ only by case: %', clashes
            USING HINT = 'Rename all but one of each (PATCH /v1/campaigns/{id}), then migrate again.';
    END IF;
END
$$
"""


def upgrade() -> None:
    # Locked first, so no campaign is added or renamed between the check and the index.
    op.execute("LOCK TABLE campaigns IN SHARE MODE")
    op.execute(_REFUSE_CLASHES)
    op.create_index(INDEX, "campaigns", [sa.text("lower(name)")], unique=True)
    op.drop_constraint(CONSTRAINT, "campaigns", type_="unique")


def downgrade() -> None:
    # Names unique whatever their case are unique as typed too: this cannot fail.
    op.create_unique_constraint(CONSTRAINT, "campaigns", ["name"])
    op.drop_index(INDEX, table_name="campaigns")
