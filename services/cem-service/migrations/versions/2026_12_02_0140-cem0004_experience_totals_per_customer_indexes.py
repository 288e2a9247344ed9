"""customer_experience_totals kept by triggers; per-customer lists on (customer, time, id) indexes

The experience view counted every response, score, feedback, open follow-up and suppression of
the customer on each read. `customer_experience_totals` keeps those figures per customer:
statement-level triggers with transition tables add each statement's net change per customer
(its new rows counted in, its old rows counted out), so a batch insert, a merge re-pointing
200,000 rows or an erasure linking rows kept under an address is one aggregated upsert in the
writing transaction. Every figure is a sum, so nothing needs recomputing on update or delete.
`experience_totals_from_rows` is the same figures computed from the rows: the backfill below,
`cem rebuild-experience-totals` and the equality test use it.

Per-customer lists are read newest first with a keyset on (time, id): each gets an index on
(customer_id, time, id) (and invitations one on (survey_id, customer_id, created_at, id)),
replacing the (customer_id, time) ones, so a page is a range scan in the order it is read at
any depth. Note: building the indexes locks each table against writes for the build (the
consumers wait; nothing is lost).

Revision ID: cem0004
Revises: cem0003
Create Date: 2026-12-02 01:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0004"
down_revision: str | Sequence[str] | None = "cem0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOTALS = (
    "responses",
    "nps_answers",
    "nps_score_sum",
    "csat_answers",
    "csat_score_sum",
    "ces_answers",
    "ces_score_sum",
    "feedback",
    "open_followups",
    "suppressions",
)


def _score_terms() -> dict[str, str]:
    terms = {}
    for metric in ("nps", "csat", "ces"):
        terms[f"{metric}_answers"] = f"CASE WHEN metric = '{metric}' AND score IS NOT NULL THEN 1 ELSE 0 END"
        terms[f"{metric}_score_sum"] = f"CASE WHEN metric = '{metric}' THEN coalesce(score, 0) ELSE 0 END"
    return terms


# What one row of each table adds to its customer's totals.
CONTRIBUTIONS: dict[str, dict[str, str]] = {
    "responses": {"responses": "1"},
    "scores": _score_terms(),
    "feedback": {"feedback": "1"},
    "followups": {"open_followups": "CASE WHEN status = 'open' THEN 1 ELSE 0 END"},
    "suppressions": {"suppressions": "1"},
}

# (table, old index, its columns, new index, its columns)
INDEXES = (
    (
        "touchpoint_interactions",
        "ix_touchpoint_interactions_customer_occurred",
        ["customer_id", "occurred_at"],
        "ix_touchpoint_interactions_customer_occurred_interaction",
        ["customer_id", "occurred_at", "interaction_id"],
    ),
    (
        "invitations",
        "ix_invitations_customer_created",
        ["customer_id", "created_at"],
        "ix_invitations_customer_created_id",
        ["customer_id", "created_at", "id"],
    ),
    (
        "invitations",
        None,
        None,
        "ix_invitations_survey_customer_created_id",
        ["survey_id", "customer_id", "created_at", "id"],
    ),
    (
        "responses",
        "ix_responses_customer_submitted",
        ["customer_id", "submitted_at"],
        "ix_responses_customer_submitted_id",
        ["customer_id", "submitted_at", "id"],
    ),
    (
        "scores",
        "ix_scores_customer_metric_submitted",
        ["customer_id", "metric", "submitted_at"],
        "ix_scores_customer_metric_submitted_response",
        ["customer_id", "metric", "submitted_at", "response_id"],
    ),
    (
        "feedback",
        "ix_feedback_customer_received",
        ["customer_id", "received_at"],
        "ix_feedback_customer_received_id",
        ["customer_id", "received_at", "id"],
    ),
    (
        "followups",
        "ix_followups_customer_status",
        ["customer_id", "status"],
        "ix_followups_customer_created_id",
        ["customer_id", "created_at", "id"],
    ),
    (
        "suppressions",
        "ix_suppressions_customer_created",
        ["customer_id", "created_at"],
        "ix_suppressions_customer_created_id",
        ["customer_id", "created_at", "id"],
    ),
)


def _terms(table: str, sign: str = "") -> str:
    """The select list of one table's rows as contributions to every total (0 for the others)."""
    own = CONTRIBUTIONS[table]
    return ", ".join(f"{sign}({own[c]}) AS {c}" if c in own else f"0 AS {c}" for c in TOTALS)


def _upsert(table: str, rows: str) -> str:
    """Add the per-customer sums of `rows` (contributions, signed) to the totals, in customer
    order (so concurrent statements lock totals rows in the same order), skipping customers
    whose figures did not change (an update that moved nothing writes nothing)."""
    own = list(CONTRIBUTIONS[table])
    sums = ", ".join(f"sum({c})" for c in own)
    changed = " OR ".join(f"sum({c}) <> 0" for c in own)
    return f"""
            INSERT INTO customer_experience_totals AS t (customer_id, {", ".join(own)})
            SELECT customer_id, {sums} FROM ({rows}) AS delta
            WHERE customer_id IS NOT NULL
            GROUP BY customer_id
            HAVING {changed}
            ORDER BY customer_id
            ON CONFLICT (customer_id) DO UPDATE SET {", ".join(f"{c} = t.{c} + excluded.{c}" for c in own)};"""


def _function(table: str) -> str:
    added = f"SELECT customer_id, {_terms(table)} FROM new_rows"
    removed = f"SELECT customer_id, {_terms(table, '-')} FROM old_rows"
    return f"""
        CREATE FUNCTION experience_totals_from_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN {_upsert(table, added)}
            ELSIF TG_OP = 'DELETE' THEN {_upsert(table, removed)}
            ELSE {_upsert(table, f"{added} UNION ALL {removed}")}
            END IF;
            RETURN NULL;
        END $$"""


def _from_rows() -> str:
    parts = " UNION ALL ".join(
        f"SELECT customer_id, {_terms(table)} FROM {table} WHERE customer_id IS NOT NULL" for table in CONTRIBUTIONS
    )
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in TOTALS)
    return f"SELECT customer_id, {sums} FROM ({parts}) AS row_terms GROUP BY customer_id"


def upgrade() -> None:
    for table, old, _, new, columns in INDEXES:
        if old is not None:
            op.drop_index(old, table_name=table)
        op.create_index(new, table, columns, unique=False)

    op.create_table(
        "customer_experience_totals",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        *(sa.Column(c, sa.BigInteger(), server_default=sa.text("0"), nullable=False) for c in TOTALS),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_experience_totals")),
    )
    op.execute(f"CREATE VIEW experience_totals_from_rows AS {_from_rows()}")
    for table in CONTRIBUTIONS:
        op.execute(_function(table))
        for event, referencing in (
            ("INSERT", "NEW TABLE AS new_rows"),
            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "OLD TABLE AS old_rows"),
        ):
            op.execute(
                f"CREATE TRIGGER experience_totals_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION experience_totals_from_{table}()"
            )
    op.execute(
        f"INSERT INTO customer_experience_totals (customer_id, {', '.join(TOTALS)}) "
        f"SELECT * FROM experience_totals_from_rows WHERE {' OR '.join(f'{c} <> 0' for c in TOTALS)}"
    )


def downgrade() -> None:
    for table in CONTRIBUTIONS:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER experience_totals_{event} ON {table}")
        op.execute(f"DROP FUNCTION experience_totals_from_{table}()")
    op.execute("DROP VIEW experience_totals_from_rows")
    op.drop_table("customer_experience_totals")
    for table, old, old_columns, new, _ in reversed(INDEXES):
        op.drop_index(new, table_name=table)
        if old is not None:
            op.create_index(old, table, old_columns, unique=False)
