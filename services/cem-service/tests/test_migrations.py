"""The models and the migrations agree (a model change without a migration fails here)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import asyncpg
import orjson

from cem.cli import ALEMBIC_INI
from cem.customers.models import email_key
from cxkit import testing
from cxkit.pg_pool import asyncpg_dsn
from cxkit.platform_models import OUTBOX_FILLFACTOR, OUTBOX_STORAGE


def test_models_match_migrations(cem_database_url: str) -> None:
    code = (
        "import sys; from alembic import command; from cxkit.migrations import alembic_config; from pathlib import Path; "
        "command.check(alembic_config(Path(sys.argv[1]), sys.argv[2]))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(ALEMBIC_INI), cem_database_url], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


async def test_the_outbox_is_stored_and_vacuumed_as_a_queue(cem_database_url: str) -> None:
    """The outbox's autovacuum options are those of OUTBOX_STORAGE and its fill factor is the
    model's OUTBOX_FILLFACTOR (migrations cem0005, cem0011)."""
    [row] = await testing.db_rows(cem_database_url, "SELECT reloptions FROM pg_class WHERE relname = 'outbox'")
    expected = {f"{k}={v}" for k, v in OUTBOX_STORAGE.items()} | {f"fillfactor={OUTBOX_FILLFACTOR}"}
    assert set(row["reloptions"]) == expected


async def test_judged_interactions_are_found_by_index(cem_database_url: str) -> None:
    """The consumer's per-poll "which of these interactions were judged" lookup reads the unique
    indexes led by interaction_id (migration cem0006), not the whole tables."""
    conn = await asyncpg.connect(asyncpg_dsn(cem_database_url))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            ids = [uuid.uuid4() for _ in range(3)]
            for table in ("invitations", "suppressions"):
                raw = await conn.fetchval(
                    f"EXPLAIN (FORMAT JSON) SELECT survey_id, interaction_id FROM {table} WHERE interaction_id = ANY($1::uuid[])",
                    ids,
                )
                scans = [n for n in testing.plan_nodes(orjson.loads(raw)[0]["Plan"]) if "Index Name" in n]
                assert [s["Index Name"] for s in scans] == [f"uq_{table}_interaction_survey"], scans
                assert "interaction_id" in scans[0]["Index Cond"], scans
    finally:
        await conn.close()


_INDEX_SIZES = (
    "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE i.indrelid = 'customer_profiles'::regclass"
)


async def test_an_announced_customer_writes_two_index_entries(cem_database_url: str) -> None:
    """A profile of a customer never merged away is written into the id and email_lower indexes
    only (migration cem0010); a merged duplicate enters the merged_into index, which the merge's
    `merged_into = survivor` lookup reads. All in a transaction undone at the end."""
    conn = await asyncpg.connect(asyncpg_dsn(cem_database_url))
    undone = conn.transaction()
    await undone.start()
    try:
        before = dict(await conn.fetch(_INDEX_SIZES))
        ids = await conn.fetch(
            "INSERT INTO customer_profiles (id, email, email_lower, name, tags, crm_version, synced_at) "
            "SELECT gen_random_uuid(), 'Someone' || g || '@Example.com', 'someone' || g || '@example.com', "
            "'Someone ' || g, '[]', 1, now() FROM generate_series(1, 3000) AS g RETURNING id"
        )
        grown = {name for name, size in await conn.fetch(_INDEX_SIZES) if size > before[name]}
        assert grown == {"pk_customer_profiles", "ix_customer_profiles_email_lower"}

        survivor, duplicates = ids[0]["id"], [r["id"] for r in ids[1:2001]]
        await conn.execute(
            "UPDATE customer_profiles SET merged_into = $1, email_lower = NULL WHERE id = ANY($2::uuid[])",
            survivor,
            duplicates,
        )
        merged = dict(await conn.fetch(_INDEX_SIZES))
        assert merged["ix_customer_profiles_merged_into"] > before["ix_customer_profiles_merged_into"]
        await conn.execute("SET LOCAL enable_seqscan = off")
        raw = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) UPDATE customer_profiles SET merged_into = $2 WHERE merged_into = $1",
            survivor,
            uuid.uuid4(),
        )
        scans = [n for n in testing.plan_nodes(orjson.loads(raw)[0]["Plan"]) if "Index Name" in n]
        assert [s["Index Name"] for s in scans] == ["ix_customer_profiles_merged_into"], scans
    finally:
        await undone.rollback()
        await conn.close()


def _alembic(database_url: str, command: str, revision: str) -> None:
    """`alembic upgrade|downgrade revision` on the database, in a child process (as `testing.migrate`)."""
    code = (
        "import sys; from alembic import command; from cxkit.migrations import alembic_config; from pathlib import Path; "
        f"command.{command}(alembic_config(Path(sys.argv[1]), sys.argv[2]), sys.argv[3])"
    )
    argv = [sys.executable, "-c", code, str(ALEMBIC_INI), database_url, revision]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


_UNLINKED_INDEXES = (
    "SELECT tablename, indexdef FROM pg_indexes WHERE indexname IN ('ix_responses_unlinked_email', 'ix_feedback_unlinked_email')"
)


async def test_answers_and_feedback_are_given_their_email_keys_as_python_folds_them() -> None:
    """Migration cem0029 stores `email_key(email)` on every answer and piece of feedback with an
    address (ASCII ones folded in SQL, the others in Python, in batches), the unlinked-address
    indexes move to that key, and the statement triggers it turns off for the backfill are on
    again. Its downgrade restores the indexes on lower(email)."""
    name = await testing.create_database("cem_keys")
    url = testing.asyncpg_url(testing.database_dsn(name))
    try:
        _alembic(url, "upgrade", "cem0028")
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            survey, customer = uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                "INSERT INTO surveys (id, name, kind, status, questions, version, created_at, updated_at) "
                "VALUES ($1, 'NPS', 'nps', 'active', '[]', 1, now(), now())",
                survey,
            )
            addresses = ["Plain@Example.COM", " Spaced@Example.com ", "İnci@Example.com", "ab-ΟΔΥΣΣΕΑΣ@example.com"]
            addresses.append("René@bücher.example")
            # More addresses Python folds than one batch holds, some of them already linked.
            addresses += [f"İnci-{i}@example.com" for i in range(2500)]
            rows = [(uuid.uuid4(), a, customer if i % 7 == 0 else None) for i, a in enumerate([*addresses, None])]
            await conn.executemany(
                "INSERT INTO feedback (id, email, customer_id, channel, text, sentiment_label, sentiment_score, received_at, "
                "recorded_at) VALUES ($1, $2, $3, 'chat', 'Hello', 'neutral', 0, now(), now())",
                rows,
            )
            await conn.executemany(
                "INSERT INTO responses (id, survey_id, email, customer_id, source, answers, submitted_at, recorded_at) "
                "VALUES ($1, $2, $3, $4, 'api', '[]', now(), now())",
                [(row_id, survey, email, owner) for row_id, email, owner in rows],
            )
        finally:
            await conn.close()

        _alembic(url, "upgrade", "cem0029")
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            for table in ("feedback", "responses"):
                keys = {r["email"]: r["email_lower"] for r in await conn.fetch(f"SELECT email, email_lower FROM {table}")}
                assert keys == {a: email_key(a) for a in addresses} | {None: None}
                assert keys["İnci@Example.com"] == "i\u0307nci@example.com"
                assert keys["ab-ΟΔΥΣΣΕΑΣ@example.com"].endswith("\u03c2@example.com")  # the final sigma
            indexes = dict(await conn.fetch(_UNLINKED_INDEXES))
            on_the_key = "USING btree (email_lower) WHERE (customer_id IS NULL)"
            assert len(indexes) == 2 and all(d.endswith(on_the_key) for d in indexes.values()), indexes
            disabled = await conn.fetch(
                "SELECT tgname FROM pg_trigger WHERE tgrelid IN ('responses'::regclass, 'feedback'::regclass) "
                "AND NOT tgisinternal AND tgenabled = 'D'"
            )
            assert disabled == []
        finally:
            await conn.close()

        _alembic(url, "downgrade", "cem0028")
        rows = await testing.db_rows(url, _UNLINKED_INDEXES)
        assert len(rows) == 2 and all("(lower((email)::text)) WHERE (customer_id IS NULL)" in r["indexdef"] for r in rows), rows
    finally:
        await testing.drop_database(name)
