"""The CEM's reports counted per kind, metric, category and sentiment label (`experience_counts`,
kept by the triggers of migration crm0022) equal the counts computed from the experience events
after the consumer stores them, a merge moves them, an erasure blanks their text, a label changes
and some are deleted (counted out into the deleting connection's stripe, which may be another);
the dashboard's experience figures fold them; `crm rebuild-experience-counts` puts right figures
that were changed by hand."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from sqlalchemy import text

from crm.dashboard.repository import ExperienceOverview, experience_overview
from crm.experience.repository import EXPERIENCE_COUNTS
from cxkit.pg_pool import asyncpg_dsn

from .conftest import crm_command


async def kept_and_from_rows(session_factory: Any) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    keys = ", ".join(EXPERIENCE_COUNTS.keys)
    sums = ", ".join(f"sum({f})::float8" for f in EXPERIENCE_COUNTS.figures)
    async with session_factory() as session:
        kept, fresh = [
            {tuple(r) for r in (await session.execute(text(f"SELECT {keys}, {sums} FROM {source} GROUP BY {keys}"))).all()}
            for source in ("experience_counts", "experience_counts_from_rows")
        ]
    return {r for r in kept if any(r[4:])}, fresh


async def assert_kept_equal_rebuilt(session_factory: Any) -> None:
    kept, fresh = await kept_and_from_rows(session_factory)
    assert kept == fresh
    async with session_factory() as session:
        assert await EXPERIENCE_COUNTS.differing_from_rows(session) == 0


async def overview(session_factory: Any) -> ExperienceOverview:
    async with session_factory() as session:
        return await experience_overview(session)


async def execute(session_factory: Any, sql: str, **params: Any) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(text(sql), params)


async def test_counts_equal_the_events_after_stores_merges_erasures_changes_and_deletes(
    make: Any, cem: Any, apply_cem: Any, session_factory: Any, crm_database_url: str
) -> None:
    first, second = [uuid.UUID((await make.customer())["id"]) for _ in range(2)]
    await apply_cem(
        cem.invited(first),
        cem.invited(second),
        cem.throttled(first),
        cem.response(first, 10),
        cem.response(first, 9),
        cem.response(second, 3),
        cem.response(second, None),  # skipped: an answer, no score
        cem.response(first, 5, "csat"),
        cem.response(second, 4, "csat"),
        cem.response(second, 2, "csat"),
        cem.response(first, 6, "ces"),
        cem.response(second, 3, "ces"),
        cem.feedback(first, "Late again", sentiment_label="negative", sentiment_score=-0.4),
        cem.feedback(second, "Fine", sentiment_label="positive", sentiment_score=0.5),
    )
    await apply_cem(cem.response(first, 7))  # a second statement, maybe another connection's stripe
    await assert_kept_equal_rebuilt(session_factory)
    figures = await overview(session_factory)
    assert (figures.invitations, figures.suppressed, figures.responses) == (2, 1, 10)
    assert (figures.promoters, figures.passives, figures.detractors, figures.nps) == (2, 1, 1, 25.0)
    assert (figures.csat_answers, figures.csat_satisfied, figures.ces_answers, figures.ces_mean) == (3, 2, 2, 4.5)
    assert (figures.feedback, figures.negative_feedback) == (2, 1)

    # A merge moves events to the survivor, an erasure blanks their text: no key changes.
    await execute(session_factory, "UPDATE experience_events SET customer_id = :a WHERE customer_id = :b", a=first, b=second)
    await execute(session_factory, "UPDATE experience_events SET text = NULL WHERE customer_id = :a", a=first)
    await assert_kept_equal_rebuilt(session_factory)
    assert await overview(session_factory) == figures
    # A label that changes moves its event from one key to another.
    await execute(session_factory, "UPDATE experience_events SET sentiment_label = 'negative' WHERE sentiment_label = 'positive'")
    await assert_kept_equal_rebuilt(session_factory)
    assert (await overview(session_factory)).negative_feedback == 2
    # Deleted events are counted out into the deleting connection's stripe: here another one than
    # the feedback's, so its stripes hold +2 and -2 feedback events, adding up to nothing.
    async with session_factory() as session:
        stored = set(await session.scalars(text("SELECT stripe FROM experience_counts WHERE kind = 'feedback.received'")))
    conn = await asyncpg.connect(asyncpg_dsn(crm_database_url))
    try:
        while conn.get_server_pid() % 16 in stored:
            await conn.close()
            conn = await asyncpg.connect(asyncpg_dsn(crm_database_url))
        await conn.execute("DELETE FROM experience_events WHERE kind = 'feedback.received' OR metric = 'ces'")
    finally:
        await conn.close()
    await assert_kept_equal_rebuilt(session_factory)
    after = await overview(session_factory)
    assert (after.feedback, after.negative_feedback, after.ces_answers, after.ces_mean, after.responses) == (0, 0, 0, None, 8)
    async with session_factory() as session:
        left = (
            await session.execute(text("SELECT sum(events), count(*) FROM experience_counts WHERE kind = 'feedback.received'"))
        ).one()
    assert (left[0], left[1] > 0) == (0, True)
    # A stripe brought back to nothing keeps no row: one connection stores an event of a key of its
    # own and deletes it again.
    conn = await asyncpg.connect(asyncpg_dsn(crm_database_url))
    try:
        await conn.execute(
            "INSERT INTO experience_events (id, event_id, kind, customer_id, occurred_at, sentiment_label, recorded_at) "
            "VALUES ($1, 'by-hand', 'feedback.received', $2, now(), 'mixed', now())",
            uuid.uuid4(),
            first,
        )
        assert await conn.fetchval("SELECT count(*) FROM experience_counts WHERE sentiment_label = 'mixed'") == 1
        await conn.execute("DELETE FROM experience_events WHERE event_id = 'by-hand'")
        assert await conn.fetchval("SELECT count(*) FROM experience_counts WHERE sentiment_label = 'mixed'") == 0
    finally:
        await conn.close()
    await assert_kept_equal_rebuilt(session_factory)


async def test_the_dashboard_figures_read_the_counts_and_the_rebuild_puts_them_right(
    make: Any, cem: Any, apply_cem: Any, session_factory: Any, crm_database_url: str
) -> None:
    customer = uuid.UUID((await make.customer())["id"])
    await apply_cem(cem.response(customer, 10), cem.response(customer, 2))
    assert (await overview(session_factory)).nps == 0.0
    # Figures changed by hand in experience_counts show on the dashboard: it folds them.
    await execute(
        session_factory, "UPDATE experience_counts SET events = events + 10, scored = scored + 10 WHERE category = 'promoter'"
    )
    changed = await overview(session_factory)
    assert (changed.responses, changed.promoters, changed.detractors) == (12, 11, 1)
    async with session_factory() as session:
        assert await EXPERIENCE_COUNTS.differing_from_rows(session) == 1

    code, out, err = await crm_command(crm_database_url, "rebuild-experience-counts")
    assert code == 0, err
    assert "experience counts rebuilt: 2 row(s); 1 were wrong" in err + out
    await assert_kept_equal_rebuilt(session_factory)
    rebuilt = await overview(session_factory)
    assert (rebuilt.responses, rebuilt.promoters, rebuilt.detractors, rebuilt.nps) == (2, 1, 1, 0.0)

    # A sum of scores is rebuilt as the scores add up, fractions and all (a CES of 5.5).
    await apply_cem(cem.response(customer, 5.5, "ces"))
    await execute(session_factory, "UPDATE experience_counts SET score_sum = score_sum + 1 WHERE metric = 'ces'")
    assert (await overview(session_factory)).ces_mean == 6.5
    code, out, err = await crm_command(crm_database_url, "rebuild-experience-counts")
    assert code == 0, err
    assert "experience counts rebuilt: 3 row(s); 1 were wrong" in err + out
    await assert_kept_equal_rebuilt(session_factory)
    assert (await overview(session_factory)).ces_mean == 5.5
