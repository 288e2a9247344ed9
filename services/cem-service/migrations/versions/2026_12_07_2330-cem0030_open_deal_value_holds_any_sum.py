"""A customer's open deal value holds any sum of open deals: numeric(38, 2), as the events'
`AmountSum`

Each deal's amount is below 10^16 (numeric(18, 2)), but a customer's open deals add up past it,
and the CRM now announces such a sum (`customer_open_deal_value`, `open_deal_value`). Stored in
numeric(18, 2) it was a numeric field overflow: the event failed its handler and went to the
DLQ. Only the precision grows, so PostgreSQL keeps the rows as they are (no table rewrite); the
change takes a brief exclusive lock.

Revision ID: cem0030
Revises: cem0029
Create Date: 2026-12-07 23:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0030"
down_revision: str | Sequence[str] | None = "cem0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("customer_profiles", "open_deal_value", type_=sa.Numeric(38, 2), existing_type=sa.Numeric(18, 2))


def downgrade() -> None:
    # Fails (numeric field overflow) while a stored sum is 10^16 or more: such a sum has no place there.
    op.alter_column("customer_profiles", "open_deal_value", type_=sa.Numeric(18, 2), existing_type=sa.Numeric(38, 2))
