"""answer_days: every survey's answers counted per question, value and UTC day, kept by triggers

`GET /v1/surveys/{id}/results` counted the answers of every response in its window on each read:
at a million responses it expanded and grouped four million stored answers (about 2.4 s on two
cores). `answer_days` keeps, per (survey, touchpoint, UTC day of the answer, question, type as
stored, kind, value), how many there are, where kind is:
- `response`: the response itself (question, type and value empty): the responses per day;
- `skipped`: an answer left empty (null, or an empty list) or erased (an erased text);
- `answered`: an answer given, with its value for a rating or a single choice (empty for a text
  or a multi choice);
- `pick`: one option picked in a multi choice (so a multi choice counts per option, never per
  combination of options).
The report reads whole days here and only the parts of days its window cuts from `responses`.
Values are cut at 500 characters (the API keeps options to 200; only SQL can store longer).

Statement-level triggers with transition tables on `responses` add each statement's net change
per key, in key order, to the writing connection's stripe (its backend pid modulo 16), as
`score_days` does (migration cem0009): an answer adds its rows, an erasure that blanks a text
moves it from `answered` to `skipped`, re-linking an answer to its customer changes nothing and
writes nothing, a delete takes its rows out. `answer_days_from_rows` is the same figures computed
from the responses: the backfill below, `cem rebuild-answer-days` and the equality test use it.

Revision ID: cem0022
Revises: cem0021
Create Date: 2026-12-05 19:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cem0022"
down_revision: str | Sequence[str] | None = "cem0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = "survey_id, touchpoint, day, question_id, type, kind, value"
STRIPES = 16
STRIPED_KEYS = f"{KEYS}, stripe"
VALUE_CHARS = 500


# The rows one response counts for (besides itself): each stored answer, skipped or answered
# with its value, and each pick of a multi choice. Any JSON is taken (a stored answer that is not
# an object counts as skipped), so no response can fail to be written because of its answers.
ANSWER_TERMS = f"""
CREATE FUNCTION answer_terms(answers jsonb) RETURNS TABLE (question_id text, type text, kind text, value text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 8 AS $$
    SELECT coalesce(a->>'question_id', ''), coalesce(a->>'type', ''),
           CASE WHEN answered THEN 'answered' ELSE 'skipped' END,
           CASE WHEN answered AND a->>'type' IN ('rating', 'single_choice') THEN left(a->>'value', {VALUE_CHARS}) ELSE '' END
      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(answers) = 'array' THEN answers ELSE '[]' END) AS e(a)
      CROSS JOIN LATERAL (
          SELECT coalesce(jsonb_typeof(a) = 'object' AND coalesce(jsonb_typeof(a->'value'), 'null') <> 'null'
                          AND a->'value' <> '[]'::jsonb, false)
      ) AS x(answered)
    UNION ALL
    SELECT coalesce(a->>'question_id', ''), 'multi_choice', 'pick', left(pick, {VALUE_CHARS})
      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(answers) = 'array' THEN answers ELSE '[]' END) AS e(a)
      CROSS JOIN LATERAL jsonb_array_elements_text(
          CASE WHEN jsonb_typeof(a) = 'object' AND a->>'type' = 'multi_choice' AND jsonb_typeof(a->'value') = 'array'
               THEN a->'value' ELSE '[]' END
      ) AS p(pick)
$$"""


def _terms(rows: str, sign: str = "", stripe: bool = True) -> str:
    """Each response of `rows` as its rows of figures: the response itself, then its
    `answer_terms`; with the writing connection's stripe and the (signed) count."""
    striped = f"(pg_backend_pid() % {STRIPES})::smallint AS stripe, " if stripe else ""
    return f"""
SELECT r.survey_id, coalesce(r.touchpoint, '') AS touchpoint, (r.submitted_at AT TIME ZONE 'UTC')::date AS day,
       t.question_id, t.type, t.kind, t.value, {striped}{sign}1 AS answers
  FROM {rows} AS r
  CROSS JOIN LATERAL (
      SELECT '' AS question_id, '' AS type, 'response' AS kind, '' AS value
      UNION ALL
      SELECT * FROM answer_terms(r.answers)
  ) AS t"""


def _upsert(rows: str) -> str:
    """Add the per-key sums of `rows` to the writing connection's stripe, in key order, skipping
    keys the statement did not change."""
    return f"""
            INSERT INTO answer_days AS d ({STRIPED_KEYS}, answers)
            SELECT {STRIPED_KEYS}, sum(answers) FROM ({rows}) AS delta
            GROUP BY {STRIPED_KEYS}
            HAVING sum(answers) <> 0
            ORDER BY {STRIPED_KEYS}
            ON CONFLICT ({STRIPED_KEYS}) DO UPDATE SET answers = d.answers + excluded.answers;"""


# A stripe brought back to nothing keeps no row.
_EMPTIED = """
            DELETE FROM answer_days WHERE answers = 0 AND survey_id IN (SELECT survey_id FROM old_rows);"""


def upgrade() -> None:
    op.create_table(
        "answer_days",
        sa.Column("survey_id", sa.Uuid(), nullable=False),
        sa.Column("touchpoint", sa.String(length=100), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("question_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("stripe", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("answers", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "survey_id", "touchpoint", "day", "question_id", "type", "kind", "value", "stripe", name=op.f("pk_answer_days")
        ),
    )
    op.execute(ANSWER_TERMS)
    op.execute(
        f"CREATE VIEW answer_days_from_rows AS SELECT {KEYS}, sum(answers)::bigint AS answers "
        f"FROM ({_terms('responses', stripe=False)}) AS row_terms GROUP BY {KEYS}"
    )
    added, removed = _terms("new_rows"), _terms("old_rows", "-")
    op.execute(f"""
        CREATE FUNCTION answer_days_from_responses() RETURNS trigger LANGUAGE plpgsql AS $$
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
            f"CREATE TRIGGER answer_days_{event.lower()} AFTER {event} ON responses "
            f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION answer_days_from_responses()"
        )
    op.execute("""
        CREATE FUNCTION answer_days_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM answer_days;
            RETURN NULL;
        END $$""")
    op.execute(
        "CREATE TRIGGER answer_days_truncate AFTER TRUNCATE ON responses "
        "FOR EACH STATEMENT EXECUTE FUNCTION answer_days_truncated()"
    )
    op.execute(
        f"INSERT INTO answer_days ({KEYS}, answers) SELECT {KEYS}, answers FROM answer_days_from_rows "
        f"WHERE answers <> 0 ORDER BY {KEYS}"
    )


def downgrade() -> None:
    for event in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER answer_days_{event} ON responses")
    op.execute("DROP FUNCTION answer_days_truncated()")
    op.execute("DROP FUNCTION answer_days_from_responses()")
    op.execute("DROP VIEW answer_days_from_rows")
    op.execute("DROP FUNCTION answer_terms(jsonb)")
    op.drop_table("answer_days")
