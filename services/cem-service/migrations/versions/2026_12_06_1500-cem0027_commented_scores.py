"""The scored answers with a comment, indexed by metric and time: the themes report reads those alone

`GET /v1/analytics/themes` (and the dashboard's themes) read every scored answer of the metric in
the window twice: once for the comments' words, once to count the answers without a comment. At a
million answers that is the whole table whatever the share of comments (0.3-0.5 s with none). The
report now reads the commented answers through this partial index, and takes the number of scored
answers from `score_days` (the answers without a comment are the difference). An answer without
a comment writes no entry here.

Revision ID: cem0027
Revises: cem0026
Create Date: 2026-12-06 15:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0027"
down_revision: str | Sequence[str] | None = "cem0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_scores_metric_submitted_commented",
        "scores",
        ["metric", "submitted_at"],
        postgresql_where=sa.text("theme_stems IS NOT NULL AND score IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_scores_metric_submitted_commented", table_name="scores")
