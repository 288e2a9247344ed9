"""The feedback sentiment report counts per received day, week or month: extended statistics on
those three expressions, so the planner knows how many buckets there are

Without them PostgreSQL guesses one bucket per distinct `received_at` (about one per piece of
feedback) and sorts every row on the bucket, spilling to disk at a million rows; with them it
counts the buckets in a hash table: the whole report took 0.39-0.45 s against 0.63-0.73 s for
1,000,000 pieces of feedback on 2 cores. ANALYZE (autovacuum's, or the one below) fills them.

Revision ID: cem0023
Revises: cem0022
Create Date: 2026-12-06 01:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "cem0023"
down_revision: str | Sequence[str] | None = "cem0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As `cem.analytics.sentiment_repository.received_bucket` writes them.
INTERVALS = ("day", "week", "month")


def upgrade() -> None:
    for interval in INTERVALS:
        op.execute(
            f"CREATE STATISTICS feedback_received_{interval} "
            f"ON (date_trunc('{interval}', timezone('UTC', received_at))) FROM feedback"
        )
    op.execute("ANALYZE feedback")


def downgrade() -> None:
    for interval in INTERVALS:
        op.execute(f"DROP STATISTICS feedback_received_{interval}")
