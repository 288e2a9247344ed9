"""experience_counts: the CEM's reports counted per kind, metric, category and sentiment, kept by triggers

The CRM dashboard's experience figures (invitations, suppressions, answers, NPS, CSAT, CES mean,
feedback and the negative share) aggregated every row of `experience_events` on each load: at
2,000,000 events about 1 s on two cores. `experience_counts` keeps, per (kind, metric,
category, sentiment label), how many events, how many have a score, the sum of the scores and
how many scored at least 4 (`CSAT_SATISFIED_FROM`): the figures fold from those few rows.

Statement-level triggers with transition tables add each statement's net change (its new rows
counted in, its old rows counted out), in key order, into the writing connection's stripe (its
backend pid modulo 16), as `score_days` in the CEM (migration cem0009): concurrent consumers do
not queue on one row's lock. A stripe brought back to nothing is deleted. Every figure is a sum,
so nothing is recomputed on update or delete (an erasure or a merge changes no key and writes
nothing). `experience_counts_from_rows` is the same figures computed from the events: the
backfill below, `crm rebuild-experience-counts` and the equality test use it.

Revision ID: crm0022
Revises: crm0021
Create Date: 2026-12-06 11:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crm0022"
down_revision: str | Sequence[str] | None = "crm0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = "kind, metric, category, sentiment_label"
FIGURES = ("events", "scored", "score_sum", "satisfied")
STRIPES = 16
STRIPED_KEYS = f"{KEYS}, stripe"
SATISFIED_FROM = 4  # crm.experience.repository.CSAT_SATISFIED_FROM


def _terms(rows: str, sign: str = "", stripe: bool = True) -> str:
    """Each row of `rows` (experience events) as its key (with the writing connection's stripe)
    and its (signed) contribution to the figures."""
    striped = f"(pg_backend_pid() % {STRIPES})::smallint AS stripe, " if stripe else ""
    return (
        f"SELECT kind, coalesce(metric, '') AS metric, coalesce(category, '') AS category, "
        f"coalesce(sentiment_label, '') AS sentiment_label, {striped}"
        f"{sign}1 AS events, {sign}(score IS NOT NULL)::int AS scored, {sign}coalesce(score, 0) AS score_sum, "
        f"{sign}(coalesce(score >= {SATISFIED_FROM}, false))::int AS satisfied FROM {rows}"
    )


def _summed(rows: str) -> str:
    sums = ", ".join(f"sum({f})::{'float8' if f == 'score_sum' else 'bigint'} AS {f}" for f in FIGURES)
    return f"SELECT {KEYS}, {sums} FROM ({rows}) AS row_terms GROUP BY {KEYS}"


def _upsert(rows: str) -> str:
    """Add the per-key sums of `rows` to the writing connection's stripe, in key order, skipping
    keys whose figures the statement did not change."""
    changed = " OR ".join(f"sum({f}) <> 0" for f in FIGURES)
    return f"""
            INSERT INTO experience_counts AS c ({STRIPED_KEYS}, {", ".join(FIGURES)})
            SELECT {STRIPED_KEYS}, {", ".join(f"sum({f})" for f in FIGURES)} FROM ({rows}) AS delta
            GROUP BY {STRIPED_KEYS}
            HAVING {changed}
            ORDER BY {STRIPED_KEYS}
            ON CONFLICT ({STRIPED_KEYS}) DO UPDATE SET {", ".join(f"{f} = c.{f} + excluded.{f}" for f in FIGURES)};"""


# A stripe brought back to nothing by deletes keeps no row. (A delete may count out of another
# stripe than the insert's: the stripes of a key still add up.)
_EMPTIED = f"""
            DELETE FROM experience_counts WHERE {" AND ".join(f"{f} = 0" for f in FIGURES)}
                AND kind IN (SELECT DISTINCT kind FROM old_rows);"""


def upgrade() -> None:
    op.create_table(
        "experience_counts",
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.String(length=20), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("sentiment_label", sa.String(length=20), nullable=False),
        sa.Column("stripe", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("scored", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("satisfied", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "metric", "category", "sentiment_label", "stripe", name=op.f("pk_experience_counts")),
    )
    op.execute(f"CREATE VIEW experience_counts_from_rows AS {_summed(_terms('experience_events', stripe=False))}")
    added, removed = _terms("new_rows"), _terms("old_rows", "-")
    op.execute(f"""
        CREATE FUNCTION experience_counts_from_events() RETURNS trigger LANGUAGE plpgsql AS $$
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
            f"CREATE TRIGGER experience_counts_{event.lower()} AFTER {event} ON experience_events "
            f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION experience_counts_from_events()"
        )
    op.execute("""
        CREATE FUNCTION experience_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM experience_counts;
            RETURN NULL;
        END $$""")
    op.execute(
        "CREATE TRIGGER experience_counts_truncate AFTER TRUNCATE ON experience_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION experience_counts_truncated()"
    )
    columns = f"{KEYS}, {', '.join(FIGURES)}"
    op.execute(f"INSERT INTO experience_counts ({columns}) SELECT {columns} FROM experience_counts_from_rows ORDER BY {KEYS}")


def downgrade() -> None:
    for event in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER experience_counts_{event} ON experience_events")
    op.execute("DROP FUNCTION experience_counts_truncated()")
    op.execute("DROP FUNCTION experience_counts_from_events()")
    op.execute("DROP VIEW experience_counts_from_rows")
    op.drop_table("experience_counts")
