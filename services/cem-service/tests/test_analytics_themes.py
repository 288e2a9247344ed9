"""What the comments talk about (GET /v1/analytics/themes): a small fixture counted by hand, the
statistics against scipy's Welch t-test and statsmodels' Benjamini-Hochberg on the raw values."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from cem.analytics.themes_repository import DICTIONARIES
from cem.surveys.texts import LANGUAGES
from cxkit.testing import bearer

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


def test_every_survey_language_has_its_dictionary() -> None:
    assert set(DICTIONARIES) == set(LANGUAGES)


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
