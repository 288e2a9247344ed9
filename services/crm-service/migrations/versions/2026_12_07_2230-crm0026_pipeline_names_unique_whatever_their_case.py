"""Pipeline names unique whatever their case: a unique index on lower(name) instead of the
constraint on the name as typed

As campaigns' (crm0025). The service refused a name another pipeline has in any case, but
compared Python's lower() of it with PostgreSQL's lower() of the stored names, which differ
('ΟΔΟΣ': a final sigma in Python, U+03C3 in PostgreSQL): the check passed and the
constraint refused the INSERT (a 500). And it checked with a SELECT before its INSERT: two
concurrent creates (or renames) both passed it, with the same name a 500 again, with names
differing by case both stored. The index makes the rule the database's own, lowered by
PostgreSQL as the service's check now is too, and the service answers its violation with the
same 409 as the check.

The service never stored two names differing only by case (as PostgreSQL lowers them) except
through those races; if some exist, the upgrade stops and names them rather than choosing for
anyone.

Revision ID: crm0026
Revises: crm0025
Create Date: 2026-12-07 22:30:00

"""

from collections.abc import Sequence

from cxkit.migrations import names_unique_as_typed, names_unique_whatever_their_case

revision: str = "crm0026"
down_revision: str | Sequence[str] | None = "crm0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_pipelines_name_lower"
CONSTRAINT = "uq_pipelines_name"


def upgrade() -> None:
    names_unique_whatever_their_case(
        "pipelines", constraint=CONSTRAINT, index=INDEX, noun="pipeline", rename="PATCH /v1/pipelines/{id}"
    )


def downgrade() -> None:
    names_unique_as_typed("pipelines", constraint=CONSTRAINT, index=INDEX)
