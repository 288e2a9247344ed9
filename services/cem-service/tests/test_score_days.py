"""The scores summed per survey, metric, touchpoint, UTC day and category (`score_days`, kept by
the triggers of migration cem0009) equal the sums computed from the scores after answers,
links of answers to their customer, erasures and deletes; the metric reports read whole days
from them and the parts of days a window cuts from the scores, with the same figures as from
the scores alone; `cem rebuild-score-days` puts right figures that were changed by hand."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
from pytest import approx
from sqlalchemy import text

from cem.analytics.repository import whole_days
from cem.responses.repository import SCORE_DAYS
from cem.responses.service import rebuild_score_days
from cxkit.events.payloads import CustomerErased
from cxkit.pg_pool import asyncpg_dsn

from .conftest import delivery, run_cem_command

Row = tuple[Any, ...]


async def kept_and_from_rows(session_factory: Any) -> tuple[set[Row], set[Row]]:
    """Each key's figures as kept (its stripes summed) and as computed from the scores; a key
    whose figures add up to nothing is no key."""
    keys = ", ".join(SCORE_DAYS.keys)
    sums = ", ".join(f"sum({f})::bigint" for f in SCORE_DAYS.figures)
    nonzero = " OR ".join(f"sum({f}) <> 0" for f in SCORE_DAYS.figures)
    async with session_factory() as session:
        kept, fresh = [
            (await session.execute(text(f"SELECT {keys}, {sums} FROM {source} GROUP BY {keys} HAVING {nonzero}"))).all()
            for source in ("score_days", "score_days_from_rows")
        ]
    return {tuple(r) for r in kept}, {tuple(r) for r in fresh}


async def assert_kept_equal_rebuilt(session_factory: Any) -> set[Row]:
    kept, fresh = await kept_and_from_rows(session_factory)
    assert kept == fresh
    async with session_factory() as session:
        assert await SCORE_DAYS.differing_from_rows(session) == 0
    return kept


def day_rows(kept: set[Row], survey_id: str, day: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(touchpoint, category) -> (answers, score sum, sum of squares) of one survey's day."""
    return {(r[2], r[4]): r[5:] for r in kept if str(r[1]) == survey_id and r[3] == dt.date.fromisoformat(day)}


async def test_score_days_equal_the_sums_from_the_scores_after_answers_links_erasures_and_deletes(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    await make.touchpoint("checkout")
    nps = await make.survey("nps")
    csat = await make.survey("csat")
    optional = await make.survey(
        "custom",
        questions=[
            {"type": "rating", "id": "nps", "text": "Would you recommend us?", "metric": "nps"},
            {"type": "text", "id": "why", "text": "Why?"},
        ],
    )
    await make.answer(nps["id"], {"nps": 10}, touchpoint="checkout", submitted_at="2026-11-02T08:00:00Z")
    await make.answer(nps["id"], {"nps": 9}, touchpoint="checkout", submitted_at="2026-11-02T23:59:59Z")
    await make.answer(nps["id"], {"nps": 3}, submitted_at="2026-11-02T12:00:00Z")
    await make.answer(nps["id"], {"nps": 0}, email="cy@example.com", submitted_at="2026-11-03T00:00:00Z")
    await make.answer(csat["id"], {"csat": 4}, submitted_at="2026-11-02T09:00:00Z")
    await make.answer(optional["id"], {"why": "no idea"}, submitted_at="2026-11-02T10:00:00Z")
    kept = await assert_kept_equal_rebuilt(session_factory)
    # Two promoters at checkout (10 + 9, 100 + 81), a detractor at no touchpoint (''), the skipped
    # answer counted with nothing summed (category ''); the next UTC day apart.
    assert day_rows(kept, nps["id"], "2026-11-02") == {("checkout", "promoter"): (2, 19, 181), ("", "detractor"): (1, 3, 9)}
    assert day_rows(kept, nps["id"], "2026-11-03") == {("", "detractor"): (1, 0, 0)}
    assert day_rows(kept, optional["id"], "2026-11-02") == {("", ""): (1, 0, 0)}
    assert day_rows(kept, csat["id"], "2026-11-02") == {("", "positive"): (1, 4, 16)}

    # The CRM announces the address's owner: the answer is linked to the customer (an update of
    # its score that moves no figure), then the customer is erased.
    cy = await make.customer(email="cy@example.com")
    assert await assert_kept_equal_rebuilt(session_factory) == kept
    await apply(delivery("customer.erased", CustomerErased(customer_id=cy, erased_at=dt.datetime.now(dt.UTC))))
    kept = await assert_kept_equal_rebuilt(session_factory)

    # Answers deleted (by hand, with their scores) count out; a day left with none keeps no row.
    async with session_factory() as session, session.begin():
        await session.execute(
            text("DELETE FROM responses WHERE survey_id = :s AND submitted_at >= '2026-11-03'"), {"s": uuid.UUID(nps["id"])}
        )
        await session.execute(
            text("DELETE FROM responses WHERE survey_id = :s AND submitted_at = '2026-11-02T08:00:00Z'"),
            {"s": uuid.UUID(nps["id"])},
        )
    kept = await assert_kept_equal_rebuilt(session_factory)
    assert day_rows(kept, nps["id"], "2026-11-03") == {}
    daily = (await client.get("/v1/analytics/nps", params={"survey_id": nps["id"], "interval": "day"})).json()["series"]
    assert [(p["start"][:10], p["n"]) for p in daily] == [("2026-11-02", 2)]
    assert day_rows(kept, nps["id"], "2026-11-02") == {("checkout", "promoter"): (1, 9, 81), ("", "detractor"): (1, 3, 9)}

    # A score moved to another day and category by hand moves its figures with it.
    async with session_factory() as session, session.begin():
        await session.execute(
            text(
                "UPDATE scores SET score = 7, category = 'passive', submitted_on = '2026-11-05' "
                "WHERE survey_id = :s AND score = 9"
            ),
            {"s": uuid.UUID(nps["id"])},
        )
    kept = await assert_kept_equal_rebuilt(session_factory)
    assert day_rows(kept, nps["id"], "2026-11-05") == {("checkout", "passive"): (1, 7, 49)}
    assert day_rows(kept, nps["id"], "2026-11-02") == {("", "detractor"): (1, 3, 9)}


# Answers at the edges of UTC days: (time, score).
ANSWERS = [
    ("2026-11-01T00:00:00Z", 10),
    ("2026-11-01T09:30:00Z", 3),
    ("2026-11-01T23:59:59Z", 9),
    ("2026-11-02T00:00:00Z", 0),
    ("2026-11-02T12:00:00Z", 8),
    ("2026-11-03T06:00:00Z", 10),
    ("2026-11-09T18:00:00Z", 6),
]


def nps_of(scores: list[int]) -> Any:
    if not scores:
        return None
    promoters = sum(s >= 9 for s in scores)
    detractors = sum(s <= 6 for s in scores)
    return approx(100 * (promoters - detractors) / len(scores), abs=1e-3)


async def test_reports_read_whole_days_from_score_days_and_cut_days_from_the_scores(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    for when, score in ANSWERS:
        await make.answer(survey["id"], {"nps": score}, submitted_at=when)

    async def report(since: str | None, until: str | None, interval: str = "day") -> dict[str, Any]:
        params = {"survey_id": survey["id"], "interval": interval}
        params |= {"from": since} if since else {}
        params |= {"to": until} if until else {}
        r = await client.get("/v1/analytics/nps", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    windows = [
        (None, None),
        ("2026-11-01T00:00:00Z", None),
        ("2026-11-01T09:30:00Z", None),  # from inclusive, inside a day
        ("2026-11-01T09:30:01Z", "2026-11-02T12:00:00Z"),  # to exclusive, inside a day
        ("2026-11-01T10:00:00Z", "2026-11-01T23:00:00Z"),  # within one day
        ("2026-11-01T23:00:00Z", "2026-11-02T01:00:00Z"),  # across one midnight, no whole day
        ("2026-11-01T12:00:00+05:00", "2026-11-03T00:00:00-03:00"),  # offsets: 07:00 and 03:00 UTC
        (None, "2026-11-02T00:00:00Z"),
        (None, "2026-11-09T17:59:59Z"),
    ]
    for since, until in windows:
        start = dt.datetime.fromisoformat(since) if since else None
        stop = dt.datetime.fromisoformat(until) if until else None
        inside = [
            (dt.datetime.fromisoformat(when), score)
            for when, score in ANSWERS
            if (start is None or dt.datetime.fromisoformat(when) >= start)
            and (stop is None or dt.datetime.fromisoformat(when) < stop)
        ]
        body = await report(since, until)
        assert body["n"] == len(inside), (since, until)
        assert body["score"] == nps_of([s for _, s in inside]), (since, until)
        per_day: dict[str, list[int]] = {}
        for when, score in inside:
            per_day.setdefault(when.date().isoformat(), []).append(score)
        assert [(p["start"][:10], p["n"], p["score"]) for p in body["series"]] == [
            (day, len(scores), nps_of(scores)) for day, scores in sorted(per_day.items())
        ], (since, until)
    weekly = await report("2026-11-01T09:30:00Z", None, "week")
    assert [(p["start"][:10], p["n"]) for p in weekly["series"]] == [("2026-10-26", 2), ("2026-11-02", 3), ("2026-11-09", 1)]
    assert weekly["mean"] == approx(36 / 6, abs=0.01)

    # Whole days are read from score_days, cut days from the scores: figures changed by hand in
    # score_days for 2 November show where a window holds that day whole, not where it cuts it.
    async with session_factory() as session, session.begin():
        await session.execute(
            text(
                "UPDATE score_days SET answers = answers + 10 "
                "WHERE survey_id = :s AND day = '2026-11-02' AND category = 'passive'"
            ),
            {"s": uuid.UUID(survey["id"])},
        )
    assert (await report("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"))["n"] == 12
    assert (await report("2026-11-02T00:00:01Z", "2026-11-03T00:00:00Z"))["n"] == 1
    assert (await report("2026-11-01T12:00:00Z", "2026-11-02T23:00:00Z"))["n"] == 3


async def test_the_touchpoint_report_reads_whole_days_from_score_days_and_cut_days_from_the_scores(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    await make.touchpoint("checkout")
    await make.touchpoint("delivery")
    checkout = await make.survey("nps", touchpoint="checkout")
    delivery = await make.survey("csat", touchpoint="delivery")
    for when, score in ANSWERS:
        await make.answer(checkout["id"], {"nps": score}, submitted_at=when)
    await make.answer(delivery["id"], {"csat": 2}, submitted_at="2026-11-02T08:00:00Z")
    await make.answer(delivery["id"], {"csat": 5}, submitted_at="2026-11-02T20:00:00Z")

    async def report(since: str | None, until: str | None) -> dict[str, Any]:
        params = ({"from": since} if since else {}) | ({"to": until} if until else {})
        r = await client.get("/v1/analytics/touchpoints", params=params)
        assert r.status_code == 200, r.text
        return {t["touchpoint"]: t for t in r.json()["items"]}

    windows = [
        (None, None),
        ("2026-11-01T09:30:00Z", None),
        ("2026-11-01T09:30:01Z", "2026-11-02T12:00:00Z"),
        ("2026-11-01T23:00:00Z", "2026-11-02T01:00:00Z"),
        ("2026-11-01T12:00:00+05:00", "2026-11-03T00:00:00-03:00"),
        (None, "2026-11-09T17:59:59Z"),
    ]
    for since, until in windows:
        start = dt.datetime.fromisoformat(since) if since else None
        stop = dt.datetime.fromisoformat(until) if until else None

        def inside(when: str, start: dt.datetime | None = start, stop: dt.datetime | None = stop) -> bool:
            at = dt.datetime.fromisoformat(when)
            return (start is None or at >= start) and (stop is None or at < stop)

        scores = [score for when, score in ANSWERS if inside(when)]
        body = await report(since, until)
        assert body["checkout"]["nps"]["n"] == body["checkout"]["responses"] == len(scores), (since, until)
        assert body["checkout"]["nps"]["score"] == nps_of(scores), (since, until)
        assert body["checkout"]["csat"]["n"] == 0
        csat = [s for when, s in (("2026-11-02T08:00:00Z", 2), ("2026-11-02T20:00:00Z", 5)) if inside(when)]
        assert body["delivery"]["csat"]["n"] == len(csat), (since, until)
        assert body["delivery"]["csat"]["score"] == (100 * sum(s >= 4 for s in csat) / len(csat) if csat else None)

    # Figures changed by hand for 2 November, in score_days (the scores) and in answer_days (the
    # responses), show where a window holds that day whole, not where it cuts it.
    async with session_factory() as session, session.begin():
        await session.execute(
            text(
                "UPDATE score_days SET answers = answers + 10 "
                "WHERE survey_id = :s AND day = '2026-11-02' AND category = 'passive'"
            ),
            {"s": uuid.UUID(checkout["id"])},
        )
        await session.execute(
            text(
                "UPDATE answer_days SET answers = answers + 5 WHERE ctid = (SELECT ctid FROM answer_days "
                "WHERE survey_id = :s AND day = '2026-11-02' AND kind = 'response' LIMIT 1)"
            ),
            {"s": uuid.UUID(checkout["id"])},
        )
    whole, cut, none = [
        (await report(since, until))["checkout"]
        for since, until in (
            ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"),
            ("2026-11-02T00:00:01Z", "2026-11-03T00:00:00Z"),
            ("2026-11-01T12:00:00Z", "2026-11-02T23:00:00Z"),
        )
    ]
    assert (whole["nps"]["n"], whole["responses"]) == (12, 7)
    assert (cut["nps"]["n"], cut["responses"]) == (1, 1)
    assert (none["nps"]["n"], none["responses"]) == (3, 3)


def test_a_window_splits_into_whole_utc_days_and_the_parts_it_cuts() -> None:
    def at(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text)

    day = dt.date.fromisoformat
    assert whole_days(None, None) == ((None, None), [])
    assert whole_days(at("2026-11-01T00:00:00Z"), None) == ((day("2026-11-01"), None), [])
    assert whole_days(at("2026-11-01T09:00:00Z"), at("2026-11-04T00:00:00Z")) == (
        (day("2026-11-02"), day("2026-11-04")),
        [(at("2026-11-01T09:00:00Z"), at("2026-11-02T00:00:00Z"))],
    )
    assert whole_days(None, at("2026-11-04T10:00:00Z")) == (
        (None, day("2026-11-04")),
        [(at("2026-11-04T00:00:00Z"), at("2026-11-04T10:00:00Z"))],
    )
    # No whole day: the window itself, whether within a day or across one midnight.
    for since, until in (("2026-11-01T09:00:00Z", "2026-11-01T10:00:00Z"), ("2026-11-01T09:00:00Z", "2026-11-02T10:00:00Z")):
        assert whole_days(at(since), at(until)) == (None, [(at(since), at(until))])
    # Offsets count in UTC: 2 Nov 01:00+02:00 is 1 Nov 23:00 UTC.
    assert whole_days(at("2026-11-02T01:00:00+02:00"), None) == (
        (day("2026-11-02"), None),
        [(at("2026-11-02T01:00:00+02:00"), at("2026-11-02T00:00:00Z"))],
    )


async def test_rebuild_command_puts_right_figures_changed_by_hand(make: Any, session_factory: Any, cem_database_url: str) -> None:
    survey = await make.survey("nps")
    await make.answer(survey["id"], {"nps": 7}, submitted_at="2026-11-02T10:00:00Z")
    await make.answer(survey["id"], {"nps": 2}, submitted_at="2026-11-03T10:00:00Z")
    before = await assert_kept_equal_rebuilt(session_factory)
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE score_days SET answers = 40 WHERE day = '2026-11-02'"))
        await session.execute(text("DELETE FROM score_days WHERE day = '2026-11-03'"))
        await session.execute(
            text(
                "INSERT INTO score_days (metric, survey_id, touchpoint, day, category, answers, score_sum, score_squares) "
                "VALUES ('nps', :s, '', '2026-11-04', 'promoter', 1, 10, 100)"
            ),
            {"s": uuid.uuid4()},
        )
    async with session_factory() as session:
        assert await SCORE_DAYS.differing_from_rows(session) == 3

    assert "scores per day rebuilt: 2 row(s); 3 were wrong" in await run_cem_command(cem_database_url, "rebuild-score-days")

    assert await assert_kept_equal_rebuilt(session_factory) == before
    async with session_factory() as session, session.begin():
        assert await rebuild_score_days(session) == (2, 0)


async def test_concurrent_answers_to_one_survey_do_not_wait_for_each_other(make: Any, cem_database_url: str) -> None:
    """Two connections answering the same survey, day and category at once: the second does not
    wait for the first to commit (each adds to its own stripe of the day)."""
    survey = uuid.UUID((await make.survey("nps"))["id"])
    connections: list[asyncpg.Connection] = []
    try:
        while len({c.get_server_pid() % 16 for c in connections}) < 2:  # two stripes apart
            connections.append(await asyncpg.connect(asyncpg_dsn(cem_database_url)))
        first = connections[0]
        second = next(c for c in connections if c.get_server_pid() % 16 != first.get_server_pid() % 16)
        for conn in (first, second):
            await conn.execute("BEGIN")
            await conn.execute("SET LOCAL lock_timeout = '2s'")
            response = uuid.uuid4()
            await conn.execute(
                "INSERT INTO responses (id, survey_id, source, answers, submitted_at, recorded_at) "
                "VALUES ($1, $2, 'api', '[]', '2026-11-02T10:00:00Z', now())",
                response,
                survey,
            )
            # The second would fail with lock_timeout here if both added to the same row.
            await conn.execute(
                "INSERT INTO scores (response_id, survey_id, metric, score, scale_min, scale_max, category, "
                "submitted_at, submitted_on) VALUES ($1, $2, 'nps', 10, 0, 10, 'promoter', '2026-11-02T10:00:00Z', "
                "'2026-11-02')",
                response,
                survey,
            )
        for conn in (first, second):
            await conn.execute("COMMIT")
        rows = await first.fetch("SELECT stripe, answers FROM score_days WHERE survey_id = $1 ORDER BY stripe", survey)
        assert sorted(r["stripe"] for r in rows) == sorted(c.get_server_pid() % 16 for c in (first, second))
        assert [r["answers"] for r in rows] == [1, 1]
    finally:
        for conn in connections:
            await conn.close()
