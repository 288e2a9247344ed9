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

from cxkit.migrations import names_unique_as_typed, names_unique_whatever_their_case

revision: str = "crm0025"
down_revision: str | Sequence[str] | None = "crm0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_campaigns_name_lower"
CONSTRAINT = "uq_campaigns_name"


def upgrade() -> None:
    names_unique_whatever_their_case(
        "campaigns", constraint=CONSTRAINT, index=INDEX, noun="campaign", rename="PATCH /v1/campaigns/{id}"
    )


def downgrade() -> None:
    names_unique_as_typed("campaigns", constraint=CONSTRAINT, index=INDEX)
