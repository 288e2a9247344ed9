"""Invitations and suppressions unique on (interaction_id, survey_id), interaction first

The interactions consumer asks, for every poll, which of its interactions already made an
invitation or a suppression (`SuppressionRepository.judged`: `interaction_id IN (...)`). The
unique constraints led with survey_id, so that was a scan of both tables on every poll: with
85,000 invitations the lookup took 55 ms, and ingest slowed as the tables grew. The same
uniqueness with the columns swapped answers it from the index.

Revision ID: cem0006
Revises: cem0005
Create Date: 2026-12-02 05:45:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "cem0006"
down_revision: str | Sequence[str] | None = "cem0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("invitations", "suppressions")


def upgrade() -> None:
    for table in _TABLES:
        op.create_unique_constraint(f"uq_{table}_interaction_survey", table, ["interaction_id", "survey_id"])
        op.drop_constraint(f"uq_{table}_survey_interaction", table, type_="unique")


def downgrade() -> None:
    for table in _TABLES:
        op.create_unique_constraint(f"uq_{table}_survey_interaction", table, ["survey_id", "interaction_id"])
        op.drop_constraint(f"uq_{table}_interaction_survey", table, type_="unique")
