"""customer_interaction_stats: each customer's interaction statistics, kept by triggers;
per-customer indexes for the task and deal lists

Statement-level triggers with transition tables keep one row per customer as interactions
are inserted (the statement's new rows, aggregated and added), and recompute the customers
whose rows an update or a delete moved (a merge re-points them). The view reads the row
instead of aggregating every interaction. `interaction_stats_from_rows` is the same figures
computed from the rows: the backfill below, `crm rebuild-interaction-stats` and the equality
test use it.

Revision ID: crm0004
Revises: crm0003
Create Date: 2026-12-02 01:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cxkit.db

revision: str = "crm0004"
down_revision: str | Sequence[str] | None = "crm0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in crm.interactions.models (PURCHASE, CONTACT_TYPES) when this revision was written.
_CONTACT = "('call', 'email', 'meeting', 'chat', 'sms', 'visit', 'demo')"
_COLUMNS = (
    "customer_id, interactions, last_interaction_at, last_contacted_at, purchases, first_purchase_at, "
    "last_purchase_at, purchase_total, purchase_amounts"
)


def _aggregate(source: str, ordered: bool = True) -> str:
    """The statistics of the rows of `source`, one row per customer; `ordered`: in customer
    order, so concurrent statements lock statistics rows in the same order."""
    return f"""
        SELECT customer_id,
               count(*),
               max(occurred_at),
               max(occurred_at) FILTER (WHERE type IN {_CONTACT}),
               count(*) FILTER (WHERE type = 'purchase'),
               min(occurred_at) FILTER (WHERE type = 'purchase'),
               max(occurred_at) FILTER (WHERE type = 'purchase'),
               coalesce(sum(amount) FILTER (WHERE type = 'purchase'), 0),
               count(amount) FILTER (WHERE type = 'purchase')
        FROM {source}
        GROUP BY customer_id{" ORDER BY customer_id" if ordered else ""}"""


def upgrade() -> None:
    op.create_table(
        "customer_interaction_stats",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("interactions", sa.BigInteger(), nullable=False),
        sa.Column("last_interaction_at", cxkit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_contacted_at", cxkit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("purchases", sa.BigInteger(), nullable=False),
        sa.Column("first_purchase_at", cxkit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_purchase_at", cxkit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("purchase_total", sa.Numeric(), nullable=False),
        sa.Column("purchase_amounts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_customer_interaction_stats_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_interaction_stats")),
    )
    op.execute(f"CREATE VIEW interaction_stats_from_rows ({_COLUMNS}) AS {_aggregate('interactions', ordered=False)}")
    op.execute(f"""
        CREATE FUNCTION interaction_stats_add() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO customer_interaction_stats AS s ({_COLUMNS})
            {_aggregate("new_rows")}
            ON CONFLICT (customer_id) DO UPDATE SET
                interactions = s.interactions + excluded.interactions,
                last_interaction_at = greatest(s.last_interaction_at, excluded.last_interaction_at),
                last_contacted_at = greatest(s.last_contacted_at, excluded.last_contacted_at),
                purchases = s.purchases + excluded.purchases,
                first_purchase_at = least(s.first_purchase_at, excluded.first_purchase_at),
                last_purchase_at = greatest(s.last_purchase_at, excluded.last_purchase_at),
                purchase_total = s.purchase_total + excluded.purchase_total,
                purchase_amounts = s.purchase_amounts + excluded.purchase_amounts;
            RETURN NULL;
        END $$""")
    # A minimum or maximum cannot be taken back: the customers a change touched are recomputed.
    recompute = f"""
            IF touched IS NOT NULL THEN
                DELETE FROM customer_interaction_stats WHERE customer_id = ANY(touched);
                INSERT INTO customer_interaction_stats ({_COLUMNS})
                SELECT * FROM interaction_stats_from_rows WHERE customer_id = ANY(touched) ORDER BY customer_id;
            END IF;
            RETURN NULL;"""
    op.execute(f"""
        CREATE FUNCTION interaction_stats_move() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE touched uuid[];
        BEGIN
            SELECT array_agg(DISTINCT c ORDER BY c) INTO touched FROM (
                SELECT o.customer_id, n.customer_id
                FROM old_rows o JOIN new_rows n USING (id)
                WHERE o.customer_id IS DISTINCT FROM n.customer_id
                   OR o.type IS DISTINCT FROM n.type
                   OR o.occurred_at IS DISTINCT FROM n.occurred_at
                   OR o.amount IS DISTINCT FROM n.amount
            ) AS changed(a, b), LATERAL (VALUES (a), (b)) AS ids(c);
            {recompute}
        END $$""")
    op.execute(f"""
        CREATE FUNCTION interaction_stats_remove() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE touched uuid[];
        BEGIN
            SELECT array_agg(DISTINCT customer_id ORDER BY customer_id) INTO touched FROM old_rows;
            {recompute}
        END $$""")
    op.execute(
        "CREATE TRIGGER interaction_stats_insert AFTER INSERT ON interactions "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION interaction_stats_add()"
    )
    op.execute(
        "CREATE TRIGGER interaction_stats_update AFTER UPDATE ON interactions "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION interaction_stats_move()"
    )
    op.execute(
        "CREATE TRIGGER interaction_stats_delete AFTER DELETE ON interactions "
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION interaction_stats_remove()"
    )
    op.execute(f"INSERT INTO customer_interaction_stats ({_COLUMNS}) SELECT * FROM interaction_stats_from_rows")
    # A customer's tasks and deals, page by page in either sort: index range scans.
    op.create_index("ix_tasks_customer_id_created_at_id", "tasks", ["customer_id", "created_at", "id"])
    op.create_index("ix_tasks_customer_id_due_at_id", "tasks", ["customer_id", "due_at", "id"])
    op.create_index("ix_deals_customer_id_created_at_id", "deals", ["customer_id", "created_at", "id"])
    # The timeline's branches, each an index range scan in (time, id) order.
    op.create_index(
        "ix_tasks_customer_id_completed_at_id",
        "tasks",
        ["customer_id", "completed_at", "id"],
        postgresql_where=sa.text("completed_at IS NOT NULL"),
    )
    op.drop_index("ix_documents_customer_id_created_at", table_name="documents")
    op.create_index("ix_documents_customer_id_created_at_id", "documents", ["customer_id", "created_at", "id"])
    op.drop_index("ix_experience_events_customer_id_kind_occurred_at", table_name="experience_events")
    op.create_index(
        "ix_experience_events_customer_id_kind_occurred_at_id", "experience_events", ["customer_id", "kind", "occurred_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_experience_events_customer_id_kind_occurred_at_id", table_name="experience_events")
    op.create_index(
        "ix_experience_events_customer_id_kind_occurred_at", "experience_events", ["customer_id", "kind", "occurred_at"]
    )
    op.drop_index("ix_documents_customer_id_created_at_id", table_name="documents")
    op.create_index("ix_documents_customer_id_created_at", "documents", ["customer_id", "created_at"])
    op.drop_index("ix_tasks_customer_id_completed_at_id", table_name="tasks")
    op.drop_index("ix_deals_customer_id_created_at_id", table_name="deals")
    op.drop_index("ix_tasks_customer_id_due_at_id", table_name="tasks")
    op.drop_index("ix_tasks_customer_id_created_at_id", table_name="tasks")
    for trigger in ("interaction_stats_insert", "interaction_stats_update", "interaction_stats_delete"):
        op.execute(f"DROP TRIGGER {trigger} ON interactions")
    for function in ("interaction_stats_add", "interaction_stats_move", "interaction_stats_remove"):
        op.execute(f"DROP FUNCTION {function}()")
    op.execute("DROP VIEW interaction_stats_from_rows")
    op.drop_table("customer_interaction_stats")
