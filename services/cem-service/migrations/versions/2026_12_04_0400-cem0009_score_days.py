"""score_days: the scores summed per survey, metric, touchpoint, UTC day and category, kept by triggers

The metric reports (`GET /v1/analytics/nps|csat|ces`) aggregated every score in their window on
each read: a weekly NPS series over a million answers scanned and hashed the million rows
(about 300 ms on two cores). `score_days` keeps, per (metric, survey, touchpoint, day,
category), the number of answers and the sum and sum of squares of their scores: every figure
of a report (counts per category, score, mean, confidence interval) folds from those sums, so
a report reads whole days here and only the parts of days its window cuts from `scores`.

Statement-level triggers with transition tables add each statement's net change per day (its
new rows counted in, its old rows counted out), in key order so concurrent statements lock the
rows in the same order. Each writing connection adds to its own stripe of a day's rows (its
backend pid modulo 16; a report sums them): with one row per day, 32 connections answering
one survey at once queued on its lock until each other's commits (about 290 against 2,000
answers/s in a pgbench of the insert). A stripe brought back to nothing is deleted. Every
figure is a sum, so nothing is recomputed on update or delete. `score_days_from_rows` is the
same figures computed from the scores: the backfill below, `cem rebuild-score-days` and the
equality test use it.

Revision ID: cem0009
Revises: cem0008
Create Date: 2026-12-04 04:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0009"
down_revision: str | Sequence[str] | None = "cem0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = "metric, survey_id, touchpoint, day, category"
FIGURES = ("answers", "score_sum", "score_squares")
# Answers to one survey on one day meet on a handful of rows: each writing connection adds to
# its own stripe of them (the backend's pid modulo STRIPES), so concurrent answers do not queue
# on one row lock until each other's commits. A report sums the stripes.
STRIPES = 16
STRIPED_KEYS = f"{KEYS}, stripe"


def _terms(rows: str, sign: str = "", stripe: bool = True) -> str:
    """Each row of `rows` (scores) as its key (with the writing connection's stripe) and its
    (signed) contribution to the figures."""
    score = "coalesce(score, 0)::bigint"
    striped = f"(pg_backend_pid() % {STRIPES})::smallint AS stripe, " if stripe else ""
    return (
        f"SELECT metric, survey_id, coalesce(touchpoint, '') AS touchpoint, submitted_on AS day, "
        f"coalesce(category, '') AS category, {striped}"
        f"{sign}1 AS answers, {sign}{score} AS score_sum, {sign}({score} * {score}) AS score_squares FROM {rows}"
    )


def _summed(rows: str) -> str:
    sums = ", ".join(f"sum({f})::bigint AS {f}" for f in FIGURES)
    return f"SELECT {KEYS}, {sums} FROM ({rows}) AS row_terms GROUP BY {KEYS}"


def _upsert(rows: str) -> str:
    """Add the per-key sums of `rows` to the writing connection's stripe of the kept figures, in
    key order, skipping keys whose figures the statement did not change (re-linking an answer
    to its customer writes nothing)."""
    changed = " OR ".join(f"sum({f}) <> 0" for f in FIGURES)
    return f"""
            INSERT INTO score_days AS d ({STRIPED_KEYS}, {", ".join(FIGURES)})
            SELECT {STRIPED_KEYS}, {", ".join(f"sum({f})" for f in FIGURES)} FROM ({rows}) AS delta
            GROUP BY {STRIPED_KEYS}
            HAVING {changed}
            ORDER BY {STRIPED_KEYS}
            ON CONFLICT ({STRIPED_KEYS}) DO UPDATE SET {", ".join(f"{f} = d.{f} + excluded.{f}" for f in FIGURES)};"""


# A stripe brought back to nothing by deletes (or answers moved away) keeps no row. (A delete
# may count out of another stripe than the answer's: the stripes of a day still add up.)
_EMPTIED = f"""
            DELETE FROM score_days WHERE {" AND ".join(f"{f} = 0" for f in FIGURES)}
                AND (metric, survey_id) IN (SELECT metric, survey_id FROM old_rows);"""


def upgrade() -> None:
    op.create_table(
        "score_days",
        sa.Column("metric", sa.String(length=10), nullable=False),
        sa.Column("survey_id", sa.Uuid(), nullable=False),
        sa.Column("touchpoint", sa.String(length=100), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("category", sa.String(length=10), nullable=False),
        sa.Column("stripe", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("answers", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.BigInteger(), nullable=False),
        sa.Column("score_squares", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("metric", "survey_id", "touchpoint", "day", "category", "stripe", name=op.f("pk_score_days")),
    )
    op.execute(f"CREATE VIEW score_days_from_rows AS {_summed(_terms('scores', stripe=False))}")
    added, removed = _terms("new_rows"), _terms("old_rows", "-")
    op.execute(f"""
        CREATE FUNCTION score_days_from_scores() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN {_upsert(added)}
            ELSIF TG_OP = 'DELETE' THEN {_upsert(removed)} {_EMPTIED}
            ELSE {_upsert(f"{added} UNION ALL {removed}")} {_EMPTIED}
            END IF;
            RETURN NULL;
        END $$""")
    for event, referencing in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER score_days_{event.lower()} AFTER {event} ON scores "
            f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION score_days_from_scores()"
        )
    op.execute("""
        CREATE FUNCTION score_days_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM score_days;
            RETURN NULL;
        END $$""")
    op.execute(
        "CREATE TRIGGER score_days_truncate AFTER TRUNCATE ON scores FOR EACH STATEMENT EXECUTE FUNCTION score_days_truncated()"
    )
    columns = f"{KEYS}, {', '.join(FIGURES)}"
    op.execute(f"INSERT INTO score_days ({columns}) SELECT {columns} FROM score_days_from_rows ORDER BY {KEYS}")


def downgrade() -> None:
    for event in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER score_days_{event} ON scores")
    op.execute("DROP FUNCTION score_days_truncated()")
    op.execute("DROP FUNCTION score_days_from_scores()")
    op.execute("DROP VIEW score_days_from_rows")
    op.drop_table("score_days")
