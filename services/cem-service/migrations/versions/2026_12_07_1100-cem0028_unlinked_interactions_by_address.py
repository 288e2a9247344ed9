"""The interactions' address index holds only the interactions no customer is linked to

`ix_touchpoint_interactions_email_lower` answers the three queries that look interactions up by
address, and each of them asks only for the rows with no customer yet (`customer_id IS NULL`):
linking them when the CRM announces a customer with that address, erasing them with the
address's owner, and a customer's data export (its rows under the address it had before a
customer was announced). Every other row wrote an entry nobody reads: each stored interaction
(a NULL address too, btree keeps NULLs), about 3 µs of the database's time per event applied
(2.5-3.1 µs of 19.5-19.7 per row of the consumer's batch insert, three runs each way).

Revision ID: cem0028
Revises: cem0027
Create Date: 2026-12-07 11:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0028"
down_revision: str | Sequence[str] | None = "cem0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_touchpoint_interactions_email_lower"


def upgrade() -> None:
    op.drop_index(INDEX, table_name="touchpoint_interactions")
    op.create_index(INDEX, "touchpoint_interactions", ["email_lower"], postgresql_where=sa.text("customer_id IS NULL"))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="touchpoint_interactions")
    op.create_index(INDEX, "touchpoint_interactions", ["email_lower"])
