"""customer_changes on the timeline: each change gets a uuid `id` and an index for the timeline

Revision ID: crm0018
Revises: crm0017
Create Date: 2026-12-05 17:00:00

The customer's timeline lists the changes of its fields (`customer_changed`) beside its
interactions, deal stage changes and the rest. Its entries are keyed by (time, kind, uuid), so a
change gets a uuid of its own (filled by the column default, for the rows there are too), found
by id through a unique index, and the customer's changes are read newest first, a page at a
time, from an index on (customer_id, changed_at, id).

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crm0018"
down_revision: str | Sequence[str] | None = "crm0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "customer_changes",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
    )
    op.create_index("uq_customer_changes_id", "customer_changes", ["id"], unique=True)
    op.create_index("ix_customer_changes_customer_id_changed_at_id", "customer_changes", ["customer_id", "changed_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_customer_changes_customer_id_changed_at_id", table_name="customer_changes")
    op.drop_index("uq_customer_changes_id", table_name="customer_changes")
    op.drop_column("customer_changes", "id")
