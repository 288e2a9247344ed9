"""Answers and feedback kept under an address are linked when the CRM announces its customer:
partial indexes on lower(email) of the responses and the feedback without a customer

Invitations, interactions and suppressions kept under an address already went to the customer
the CRM announced with it; answers and feedback stayed without one, so the customer's experience
missed them. The link (and an erasure or a data export, which find such rows by the address)
reads them through these indexes instead of scanning the tables. Only rows without a customer
are in them.

Revision ID: cem0020
Revises: cem0019
Create Date: 2026-12-05 17:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0020"
down_revision: str | Sequence[str] | None = "cem0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {"ix_responses_unlinked_email": "responses", "ix_feedback_unlinked_email": "feedback"}


def upgrade() -> None:
    for name, table in _INDEXES.items():
        op.create_index(name, table, [sa.text("lower(email)")], postgresql_where=sa.text("customer_id IS NULL"))


def downgrade() -> None:
    for name, table in _INDEXES.items():
        op.drop_index(name, table_name=table)
