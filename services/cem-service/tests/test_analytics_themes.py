"""What the comments talk about (GET /v1/analytics/themes): a small fixture counted by hand, the
statistics against scipy's Welch t-test and statsmodels' Benjamini-Hochberg on the raw values."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest
from scipy import stats as scipy_stats
from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql
from statsmodels.stats.multitest import multipletests

from cem.analytics.drivers_repository import answer_value
from cem.analytics.themes_repository import _THEMES, _statement
from cem.report_filters import ReportFilters
from cem.responses.models import Score
from cem.surveys.texts import LANGUAGES
from cxkit.testing import bearer

from .test_customer_events import erased

# (score, comment) -> NPS per answer: 0-6 detractor -100, 7-8 passive 0, 9-10 promoter +100.
ANSWERS = [
    (2, "The delivery was late"),
    (3, "Late delivery, again!"),
    (10, "Friendly staff"),
    (9, "Staff were friendly and quick"),
    (8, "Quick deliveries"),
    (10, None),
]
# Stop words (the, was, again, were, and) left out; delivery/deliveries -> deliveri, friendly -> friend.
# deliveri: answers 1, 2, 5 (-100, -100, 0); friend, staff: 3, 4 (+100, +100); late: 1, 2; quick: 4, 5.
VALUES = {
    "deliveri": [-100, -100, 0],
    "friend": [100, 100],
    "late": [-100, -100],
    "quick": [100, 0],
    "staff": [100, 100],
}
EVERYONE = [-100, -100, 100, 100, 0]


MIGRATION = Path(__file__).parents[1] / "migrations/versions/2026_12_05_1800-cem0021_comment_themes_kept_with_scores.py"


def _migration() -> Any:
    """The migration that keeps the themes with the scores (its dictionaries and its fill)."""
    spec = importlib.util.spec_from_file_location("cem0021", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_every_survey_language_has_its_dictionary(session_factory: Any) -> None:
    dictionaries = _migration().DICTIONARIES
    assert set(dictionaries) == set(LANGUAGES)
    async with session_factory() as session:
        for language, dictionary in dictionaries.items():
            assert await session.scalar(text("SELECT theme_dictionary(:language)::text"), {"language": language}) == dictionary


async def _themes_kept(session_factory: Any, response_ids: list[str]) -> dict[str, tuple[Any, Any]]:
    async with session_factory() as session:
        scores = await session.scalars(select(Score).where(Score.response_id.in_(response_ids)))
        return {str(s.response_id): (s.theme_stems, s.theme_words) for s in scores}


async def test_each_score_keeps_its_comment_s_themes_as_the_answer_is_recorded_and_the_migration_fills_them(
    make: Any, session_factory: Any
) -> None:
    english = await make.survey("nps")
    german = await make.survey("csat", language="de")
    answers = [
        await make.answer(english["id"], {"nps": 3, "reason": "Deliveries late, the delivery was LATE again"}),
        await make.answer(english["id"], {"nps": 9, "reason": "and the, of"}),  # stop words only
        await make.answer(english["id"], {"nps": 9}),  # no comment
        await make.answer(german["id"], {"csat": 2, "improve": "Die Lieferungen waren langsam, 3 Tage"}),
    ]
    ids = [a["id"] for a in answers]
    kept = await _themes_kept(session_factory, ids)
    assert kept == {
        ids[0]: (["deliveri", "late"], ["deliveries", "late"]),  # a stem once, its first form alphabetically
        ids[1]: ([], []),
        ids[2]: (None, None),
        ids[3]: (["langsam", "liefer", "tag"], ["langsam", "lieferungen", "tage"]),  # German stems; "3" is no word
    }
    # The migration's fill of the scores recorded before it gives the same.
    migration = _migration()
    async with session_factory() as session, session.begin():
        await session.execute(update(Score).where(Score.response_id.in_(ids)).values(theme_stems=["x"], theme_words=["x"]))
        await session.execute(text(migration.BACKFILL + " AND scores.response_id = ANY(:ids)"), {"ids": ids})
    # An answer without a comment is not touched by the fill: its new columns are null already.
    assert await _themes_kept(session_factory, ids) == {**kept, ids[2]: (["x"], ["x"])}


# scipy warns when one side of a reference test has no spread (every answer the same score).
@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation:RuntimeWarning")
async def test_themes_are_counted_by_stem_and_tested_against_the_rest(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    for score, comment in ANSWERS:
        await make.answer(survey["id"], {"nps": score, "reason": comment})
    german = await make.survey("nps", language="de")
    await make.answer(german["id"], {"nps": 0, "reason": "Die Lieferung war langsam"})

    r = await client.get("/v1/analytics/themes", params={"metric": "nps", "survey_id": survey["id"], "min_n": 2})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["n"], report["without_comment"], report["score"], report["min_n"]) == (5, 1, 0.0, 2)
    themes = report["themes"]
    assert [(t["stem"], t["theme"], t["n"], t["share"]) for t in themes] == [
        ("deliveri", "delivery", 3, 0.6),
        ("friend", "friendly", 2, 0.4),
        ("late", "late", 2, 0.4),
        ("quick", "quick", 2, 0.4),
        ("staff", "staff", 2, 0.4),
    ]
    by_stem = {t["stem"]: t for t in themes}
    assert (by_stem["deliveri"]["score"], by_stem["deliveri"]["rest_score"], by_stem["deliveri"]["effect"]) == (
        pytest.approx(-66.67, abs=0.01),
        100.0,
        pytest.approx(-166.6667, abs=1e-4),
    )
    # Checked against the libraries on the raw per-answer values.
    tested = {}
    for stem, values in VALUES.items():
        rest = list(EVERYONE)
        for v in values:
            rest.remove(v)
        expected = scipy_stats.ttest_ind(values, rest, equal_var=False)
        if expected.pvalue != expected.pvalue:  # nan: neither side varies
            assert by_stem[stem]["status"] == "no_variance", stem
            continue
        assert by_stem[stem]["status"] == "tested" and by_stem[stem]["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
        tested[stem] = expected.pvalue
    adjusted = multipletests(list(tested.values()), method="fdr_bh")[1]
    for stem, p_adjusted in zip(tested, adjusted, strict=True):
        assert by_stem[stem]["p_adjusted"] == pytest.approx(p_adjusted, rel=1e-9)
        assert by_stem[stem]["significant"] == (p_adjusted < 0.05)

    # The German comment is split by the German dictionary (die, war: stop words); min_n 10: too few to test.
    german_report = (await client.get("/v1/analytics/themes", params={"metric": "nps", "survey_id": german["id"]})).json()
    german_themes = {t["stem"]: t for t in german_report["themes"]}
    assert set(german_themes) == {"liefer", "langsam"} and german_themes["liefer"]["theme"] == "lieferung"
    assert all(t["status"] == "too_few" and t["effect"] is None for t in german_themes.values())
    one = (await client.get("/v1/analytics/themes", params={"metric": "nps", "survey_id": survey["id"], "limit": 1})).json()
    assert [t["stem"] for t in one["themes"]] == ["deliveri"]


async def test_themes_filters_and_refusals(client: httpx.AsyncClient, make: Any, keys: dict[str, str]) -> None:
    csat = await make.survey("csat")
    await make.answer(csat["id"], {"csat": 5})
    empty = (await client.get("/v1/analytics/themes", params={"metric": "csat", "survey_id": csat["id"]})).json()
    assert (empty["n"], empty["without_comment"], empty["score"], empty["themes"]) == (0, 1, None, [])
    mismatch = await client.get("/v1/analytics/themes", params={"metric": "nps", "survey_id": csat["id"]})
    assert mismatch.status_code == 422 and mismatch.headers["content-type"] == "application/problem+json"
    for params in ({"metric": "xyz"}, {"metric": "nps", "limit": 0}, {"metric": "nps", "min_n": 1}, {}):
        assert (await client.get("/v1/analytics/themes", params=params)).status_code == 422, params
    assert (await client.get("/v1/analytics/themes", params={"metric": "nps"}, headers=bearer(keys["read"]))).status_code == 200
    assert (
        await client.get("/v1/analytics/themes", params={"metric": "nps"}, headers=bearer(keys["revoked"]))
    ).status_code == 401


async def test_an_erased_customer_s_comment_themes_go_with_its_words(
    client: httpx.AsyncClient, make: Any, apply: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    customer = await make.customer()
    theirs = await make.answer(survey["id"], {"nps": 2, "reason": "Grumpy courier"}, customer_id=str(customer))
    other = await make.answer(survey["id"], {"nps": 10, "reason": "Cheerful courier"})
    await apply(erased(customer))

    kept = await _themes_kept(session_factory, [theirs["id"], other["id"]])
    assert kept == {theirs["id"]: (None, None), other["id"]: (["cheer", "courier"], ["cheerful", "courier"])}
    report = (await client.get("/v1/analytics/themes", params={"metric": "nps", "survey_id": survey["id"]})).json()
    assert (report["n"], report["without_comment"]) == (1, 1)
    assert {t["stem"]: t["n"] for t in report["themes"]} == {"cheer": 1, "courier": 1}


async def test_the_answers_without_a_comment_are_counted_from_the_daily_rollup(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    survey = await make.survey("nps")
    for score, comment in ANSWERS:
        await make.answer(survey["id"], {"nps": score, "reason": comment})
    params = {"metric": "nps", "survey_id": survey["id"], "min_n": 2}
    before = (await client.get("/v1/analytics/themes", params=params)).json()
    assert (before["n"], before["without_comment"]) == (5, 1)

    # A hand change in score_days (five more promoters that day) shows: the scores are not read for it.
    async with session_factory() as session, session.begin():
        changed = await session.execute(
            text(
                "UPDATE score_days SET answers = answers + 5, score_sum = score_sum + 50, score_squares = score_squares + 500 "
                "WHERE ctid = (SELECT ctid FROM score_days WHERE survey_id = :s AND category = 'promoter' LIMIT 1)"
            ),
            {"s": survey["id"]},
        )
        assert changed.rowcount == 1
    after = (await client.get("/v1/analytics/themes", params=params)).json()
    assert (after["n"], after["without_comment"]) == (5, 6)
    assert after["themes"] == before["themes"]


async def test_the_themes_statement_reads_the_commented_answers_alone_once(session_factory: Any) -> None:
    """Once, through the partial index of the scored answers with a comment (the planner is kept
    off a sequential scan: the test tables are small)."""
    value = str(answer_value("nps").compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    for filters in (ReportFilters(), ReportFilters(since=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))):
        where, params = filters.text_where(survey="scores.survey_id", touchpoint="scores.touchpoint", at="scores.submitted_at")
        statement = _statement(_THEMES, value, where)
        async with session_factory() as session, session.begin():
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            [plan] = (
                await session.execute(text("EXPLAIN (FORMAT JSON) " + str(statement)), {**params, "metric": "nps", "limit": 5})
            ).scalar_one()
        scans = [node for node in plan_nodes(plan["Plan"]) if node.get("Relation Name") == "scores"]
        assert [node.get("Index Name") for node in scans] == ["ix_scores_metric_submitted_commented"], scans


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in plan_nodes(child))]
