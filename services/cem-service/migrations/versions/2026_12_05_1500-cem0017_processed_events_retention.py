"""processed_events: a BRIN index on processed_at, so ids older than PROCESSED_EVENTS_RETENTION_DAYS can be deleted

Revision ID: cem0017
Revises: cem0016
Create Date: 2026-12-05 15:00:00

"""

from collections.abc import Sequence

from cxkit.migrations import create_processed_events_time_index, drop_processed_events_time_index

revision: str = "cem0017"
down_revision: str | Sequence[str] | None = "cem0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_processed_events_time_index()


def downgrade() -> None:
    drop_processed_events_time_index()
