"""Key-driver analysis (GET /v1/analytics/drivers): a tiny CES fixture worked out by hand (numbers
in the comments), and generated NPS answers with a planted effect checked against scipy's Welch
t-test on the raw per-answer values and statsmodels' Benjamini-Hochberg."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from scipy import stats as scipy_stats
from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql
from statsmodels.stats.multitest import multipletests

from cem.analytics.drivers import benjamini_hochberg, compare_levels, result_fields, welch_from_moments
from cem.analytics.drivers_repository import Moments, driver_statement
from cem.customers.service import apply_customer_snapshots
from cem.report_filters import ReportFilters
from cem.responses.models import Score, SurveyResponse
from cem.touchpoints.models import TouchpointInteraction
from cxkit.events.payloads import CustomerCreated

from .conftest import EventApplier, Factory, interaction

ANSWERED = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def approx(value: float) -> Any:
    return pytest.approx(value, abs=0.0001)


def moments(values: list[int]) -> Moments:
    return Moments(len(values), sum(values), sum(v * v for v in values))


# --- the statistics, by hand ------------------------------------------------------------------


def test_welch_test_from_moments_on_a_hand_worked_sample() -> None:
    # With: 3, 4, 2, 3 -> mean 3, squared deviations 0 + 1 + 1 + 0 = 2, variance 2/3.
    # Without: 7, 6, 5, 2 -> mean 5, squared deviations 4 + 1 + 0 + 9 = 14, variance 14/3.
    # effect = 3 - 5 = -2; se^2 = (2/3)/4 + (14/3)/4 = 1/6 + 7/6 = 4/3, se = 1.154701, t = -1.732051.
    # Welch-Satterthwaite df = (4/3)^2 / ((1/6)^2/3 + (7/6)^2/3) = (16/9) / (50/108) = 3.84.
    # t(0.975, 3.84) = 2.822670 (t table) -> half width 2.822670 * 1.154701 = 3.259338 -> [-5.259338, 1.259338];
    # p = 2 * P(T_3.84 > 1.732051) = 0.161279.
    test = welch_from_moments(moments([3, 4, 2, 3]), moments([7, 6, 5, 2]))
    assert test is not None
    assert test.effect == approx(-2.0)
    assert test.ci95 == (approx(-5.259338), approx(1.259338))
    assert test.p_value == approx(0.161279)


def test_welch_test_needs_some_spread() -> None:
    assert welch_from_moments(moments([5, 5, 5]), moments([5, 5])) is None  # one score on both sides: nothing to test
    # Only one side varies: df = n - 1 of that side. 5, 5, 5 against 1, 3: effect 3, se^2 = 2/2 = 1,
    # t = 3 on 1 df: p = 2 * (1/2 - atan(3)/pi) = 0.204833; t(0.975, 1) = 12.706205 -> [-9.706205, 15.706205].
    test = welch_from_moments(moments([5, 5, 5]), moments([1, 3]))
    assert test is not None and test.effect == approx(3.0) and test.p_value == approx(0.204833)
    assert test.ci95 == (approx(-9.706205), approx(15.706205))


# scipy warns when a side has no spread (every answer the same score).
@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation:RuntimeWarning")
def test_a_level_that_splits_the_scores_perfectly_is_certain_as_scipy_says() -> None:
    # Every answer with the level 5, every other 2: no spread on either side, so no standard error,
    # but the data leave no doubt about the difference. scipy: t = inf, p = 0, interval [3, 3].
    for with_level, without in [([5, 5, 5], [2, 2]), ([100] * 4, [-100] * 6), ([1, 1], [3, 3, 3])]:
        expected = scipy_stats.ttest_ind(with_level, without, equal_var=False)
        ci = expected.confidence_interval(0.95)
        test = welch_from_moments(moments(with_level), moments(without))
        assert test is not None
        assert test.effect == sum(with_level) / len(with_level) - sum(without) / len(without)
        assert test.p_value == expected.pvalue == 0.0
        assert test.ci95 == (ci.low, ci.high) == (test.effect, test.effect)


@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation:RuntimeWarning")
def test_a_perfect_split_is_tested_and_adjusted_with_the_other_levels() -> None:
    # NPS per answer: the vips all promoters (+100), the others all detractors (-100); half of each
    # side customers, half leads (no difference); and a tag every answer shares the score of (none).
    vip, rest = [100] * 4, [-100] * 4
    customer, lead = [100, 100, -100, -100], [100, 100, -100, -100]
    levels = {
        ("tag", "vip"): moments(vip),
        ("lifecycle_stage", "customer"): moments(customer),
        ("lifecycle_stage", "lead"): moments(lead),
    }
    results = {r.key: r for r in compare_levels(moments(vip + rest), levels, min_n=2)}
    expected = {
        ("tag", "vip"): scipy_stats.ttest_ind(vip, rest, equal_var=False).pvalue,
        ("lifecycle_stage", "customer"): scipy_stats.ttest_ind(customer, lead, equal_var=False).pvalue,
        ("lifecycle_stage", "lead"): scipy_stats.ttest_ind(lead, customer, equal_var=False).pvalue,
    }
    adjusted = dict(zip(expected, multipletests(list(expected.values()), method="fdr_bh")[1], strict=True))
    assert all(r.status == "tested" for r in results.values())
    for key, p_value in expected.items():
        assert results[key].test is not None and results[key].test.p_value == pytest.approx(p_value, abs=1e-12)
        assert results[key].p_adjusted == pytest.approx(adjusted[key], abs=1e-12)
    shown = result_fields(results[("tag", "vip")])
    assert (shown["status"], shown["effect"], shown["p_value"], shown["p_adjusted"], shown["significant"]) == (
        "tested",
        200.0,
        0.0,
        0.0,
        True,
    )
    assert shown["ci95"] is not None and (shown["ci95"].low, shown["ci95"].high) == (200.0, 200.0)

    # Both sides one and the same score: nothing to test.
    same = compare_levels(moments([7] * 6), {("tag", "vip"): moments([7] * 3)}, min_n=2)
    assert [(r.status, r.test, r.p_adjusted) for r in same] == [("no_variance", None, None)]


def test_benjamini_hochberg_by_hand_and_against_statsmodels() -> None:
    # m = 4, p = .01, .04, .03, .20: sorted .01, .03, .04, .20 -> p * 4 / rank = .04, .06, .0533, .20;
    # non-decreasing from the top: .20, min(.0533, .20) = .0533, min(.06, .0533) = .0533, .04.
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.20]) == [approx(0.04), approx(0.053333), approx(0.053333), approx(0.2)]
    assert benjamini_hochberg([]) == []
    rng = random.Random(12)
    for m in (1, 2, 7, 40):
        p_values = [rng.choice([rng.random(), rng.random() ** 6, 0.5]) for _ in range(m)]  # ties too
        assert benjamini_hochberg(p_values) == pytest.approx(list(multipletests(p_values, method="fdr_bh")[1]), rel=1e-12)


def test_welch_test_from_moments_matches_scipy_on_the_raw_values() -> None:
    rng = random.Random(5)
    for n1, n2 in [(2, 3), (12, 40), (300, 25)]:
        a = [rng.randint(0, 10) for _ in range(n1)]
        b = [rng.randint(0, 10) + 1 for _ in range(n2)]
        expected = scipy_stats.ttest_ind(a, b, equal_var=False)
        ci = expected.confidence_interval(0.95)
        test = welch_from_moments(moments(a), moments(b))
        assert test is not None
        assert test.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert test.ci95 == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_the_service_starts_without_the_statistics_libraries() -> None:
    # They are imported by the first report, not at start-up (resident memory, SPEC 6).
    code = (
        "import sys, cem.main, cem.analytics.drivers\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'scipy', 'statsmodels', 'pandas', 'numpy'}\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- over HTTP: a tiny fixture worked out by hand -----------------------------------------------


async def _hand_worked_fixture(make: Factory, apply: EventApplier) -> dict[str, Any]:
    """Eight customers answer a CES survey about checkout (journey stage purchase) on 20 November:

    customer  score  support-call visit (support_ticket_closed)  lifecycle  tags  open deals
    1         3      10 Nov                                     customer   vip   0
    2         4      10 Nov                                     customer         0
    3         2      10 Nov                                     lead             0
    4         3      10 Nov                                     lead             0
    5         7      15 Sep (66 days before: outside 30 days)   customer   vip   5,000
    6         6      -                                          customer         5,000
    7         5      -                                          lead             0
    8         2      web-login (login) on 19 Nov                lead             0
    and one anonymous answer (1)."""
    await make.touchpoint("checkout", journey_stage="purchase")
    survey = await make.survey("ces")
    rows = [
        (3, "2026-11-10", "customer", ["vip"], 0),
        (4, "2026-11-10", "customer", [], 0),
        (2, "2026-11-10", "lead", [], 0),
        (3, "2026-11-10", "lead", [], 0),
        (7, "2026-09-15", "customer", ["vip"], 5000),
        (6, None, "customer", [], 5000),
        (5, None, "lead", [], 0),
        (2, None, "lead", [], 0),
    ]
    customers = []
    for score, support_on, stage, tags, deals in rows:
        cid = await make.customer(lifecycle_stage=stage, tags=tags, open_deal_value=Decimal(deals))
        customers.append(cid)
        if support_on is not None:
            when = dt.datetime.fromisoformat(support_on).replace(hour=9, tzinfo=dt.UTC)
            await apply(interaction(cid, type="support_ticket_closed", touchpoint="support-call", occurred_at=when))
        await make.answer(survey["id"], {"ces": score}, customer_id=cid, touchpoint="checkout", submitted_at=ANSWERED)
    await apply(interaction(customers[7], type="login", touchpoint="web-login", occurred_at=ANSWERED - dt.timedelta(days=1)))
    await make.answer(survey["id"], {"ces": 1}, touchpoint="checkout", submitted_at=ANSWERED)
    return survey


def _untested(factor: str, level: str, n: int, rest_n: int, score: float, rest_score: float | None) -> dict[str, Any]:
    return {
        "factor": factor,
        "level": level,
        "status": "too_few",
        "n": n,
        "rest_n": rest_n,
        "score": approx(score),
        "rest_score": None if rest_score is None else approx(rest_score),
        "effect": None,
        "ci95": None,
        "p_value": None,
        "p_adjusted": None,
        "significant": False,
    }


async def test_drivers_of_ces_on_a_hand_worked_fixture(client: httpx.AsyncClient, make: Factory, apply: EventApplier) -> None:
    survey = await _hand_worked_fixture(make, apply)
    r = await client.get("/v1/analytics/drivers", params={"metric": "ces", "survey_id": survey["id"], "min_n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n"] == 8 and body["anonymous"] == 1 and body["score"] == approx(4.0)  # 32 / 8
    assert (body["window_days"], body["min_n"], body["test"], body["adjustment"]) == (30, 3, "welch-t", "benjamini-hochberg")
    # support-call in the 30 days before: customers 1-4 (3, 4, 2, 3) against 5-8 (7, 6, 5, 2): effect -2,
    # [-5.259338, 1.259338], p 0.161279 (test_welch_test_from_moments_on_a_hand_worked_sample).
    # Lifecycle customer: 3, 4, 7, 6 (mean 5, variance 10/3) against lead: 2, 3, 5, 2 (mean 3, variance 2):
    # effect 2, se^2 = (10/3)/4 + 2/4 = 4/3, t = 1.732051, df = (16/9) / (((5/6)^2 + (1/2)^2)/3) = 5.647059,
    # t(0.975, 5.647059) = 2.484465 -> half width 2.868814 -> [-0.868814, 4.868814]; p = 0.137063.
    # Lead is the mirror image: effect -2, [-4.868814, 0.868814], same p.
    # Benjamini-Hochberg over the 4 tests, p sorted .137063, .137063, .161279, .161279:
    # rank 4: .161279 * 4/4 = .161279; rank 3: min(.161279 * 4/3, .161279) = .161279;
    # ranks 2 and 1: min(.137063 * 4/2, ...) = .161279. Every adjusted p is .161279: none significant.
    support = {"n": 4, "rest_n": 4, "score": approx(3.0), "rest_score": approx(5.0), "effect": approx(-2.0)}
    support |= {"ci95": {"low": approx(-5.2593), "high": approx(1.2593)}, "p_value": approx(0.161279)}
    lifecycle = {"n": 4, "rest_n": 4, "p_value": approx(0.137063)}
    tested = {"status": "tested", "p_adjusted": approx(0.161279), "significant": False}
    assert body["factors"] == [
        # Tested first: by adjusted p (all equal), then raw p, then |effect|, factor and level.
        {"factor": "lifecycle_stage", "level": "customer", **tested, **lifecycle, "score": approx(5.0),
         "rest_score": approx(3.0), "effect": approx(2.0), "ci95": {"low": approx(-0.8688), "high": approx(4.8688)}},
        {"factor": "lifecycle_stage", "level": "lead", **tested, **lifecycle, "score": approx(3.0),
         "rest_score": approx(5.0), "effect": approx(-2.0), "ci95": {"low": approx(-4.8688), "high": approx(0.8688)}},
        {"factor": "interaction_type", "level": "support_ticket_closed", **tested, **support},
        {"factor": "touchpoint", "level": "support-call", **tested, **support},
        # Then the levels with fewer than 3 answers on a side, by factor and level.
        _untested("interaction_type", "login", 1, 7, 2.0, 30 / 7),
        _untested("journey_stage", "purchase", 8, 0, 4.0, None),
        _untested("open_deal_value", "1k_10k", 2, 6, 6.5, 19 / 6),  # customers 5 and 6
        _untested("open_deal_value", "none", 6, 2, 19 / 6, 6.5),
        _untested("tag", "vip", 2, 6, 5.0, 22 / 6),  # customers 1 and 5
        _untested("touchpoint", "web-login", 1, 7, 2.0, 30 / 7),
    ]  # fmt: skip


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def test_the_drivers_statement_looks_up_each_answers_window_and_reads_the_answers_three_times(
    make: Factory, apply: EventApplier, session_factory: Any
) -> None:
    """Each answer's visits are one index range of the customer's interactions, with nothing sorted
    or hashed per answer; the answers (a CTE) are read by the visits, the fold per touchpoint (the
    journey stages and the overall figures) and the fold per customer (the CRM factors), no more."""
    survey = await _hand_worked_fixture(make, apply)
    stmt = driver_statement("ces", ReportFilters(survey_id=uuid.UUID(survey["id"])), window_days=30)
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    async with session_factory() as session, session.begin():
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text("SET LOCAL enable_bitmapscan = off"))
        plan = (await session.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql))).scalar_one()[0]["Plan"]
    nodes = _nodes(plan)
    history = next(n for n in nodes if n.get("Subplan Name") == "CTE history")
    assert {n["Node Type"] for n in _nodes(history)} == {"Nested Loop", "CTE Scan", "Index Scan"}, history
    lookup = next(n for n in _nodes(history) if n["Node Type"] == "Index Scan")
    assert lookup["Relation Name"] == "touchpoint_interactions" and lookup["Actual Loops"] == 8  # the known customers' answers
    assert "occurred_at" in lookup["Index Cond"]
    assert sum(n["Node Type"] == "CTE Scan" and n.get("CTE Name") == "answers" for n in nodes) == 3


async def test_csat_effect_is_in_percentage_points(client: httpx.AsyncClient, make: Factory) -> None:
    # Customers answer 5, 4, 2 (2 of 3 positive: CSAT 66.67); leads 1, 2, 5 (1 of 3: 33.33). Per answer
    # 100 / 0: 100, 100, 0 against 0, 0, 100, each variance 3333.33; se^2 = 2 * 3333.33 / 3, se = 47.1405;
    # effect 33.3333, t = 0.707107 on df = 4 (equal variances and sizes); p = 0.518519;
    # t(0.975, 4) = 2.776445 -> half width 130.8829 -> [-97.5495, 164.2162].
    survey = await make.survey("csat")
    for stage, score in [("customer", 5), ("customer", 4), ("customer", 2), ("lead", 1), ("lead", 2), ("lead", 5)]:
        cid = await make.customer(lifecycle_stage=stage)
        await make.answer(survey["id"], {"csat": score}, customer_id=cid, submitted_at=ANSWERED)
    body = (await client.get("/v1/analytics/drivers", params={"metric": "csat", "min_n": 2})).json()
    assert body["n"] == 6 and body["score"] == approx(50.0)
    customer = next(f for f in body["factors"] if f["level"] == "customer")
    assert (customer["score"], customer["rest_score"], customer["effect"]) == (approx(66.6667), approx(33.3333), approx(33.3333))
    assert customer["ci95"] == {"low": approx(-97.5495), "high": approx(164.2162)}
    assert customer["p_value"] == approx(0.518519) and customer["p_adjusted"] == approx(0.518519)


@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation:RuntimeWarning")
async def test_a_tag_that_splits_promoters_from_detractors_is_a_certain_driver(client: httpx.AsyncClient, make: Factory) -> None:
    # Every vip a promoter (+100), everyone else a detractor (-100): the scores vary, only not
    # within either side. Lifecycle stage (half of each side a customer) makes no difference.
    survey = await make.survey("nps")
    rows = [(["vip"], "customer", 10), (["vip"], "customer", 9), (["vip"], "lead", 10), (["vip"], "lead", 9)]
    rows += [([], "customer", 0), ([], "customer", 6), ([], "lead", 3), ([], "lead", 0)]
    for tags, stage, score in rows:
        cid = await make.customer(lifecycle_stage=stage, tags=tags)
        await make.answer(survey["id"], {"nps": score}, customer_id=cid, submitted_at=ANSWERED)
    body = (await client.get("/v1/analytics/drivers", params={"metric": "nps", "min_n": 2})).json()
    by_level = {(f["factor"], f["level"]): f for f in body["factors"]}
    vip = by_level[("tag", "vip")]
    expected = scipy_stats.ttest_ind([100] * 4, [-100] * 4, equal_var=False)
    ci = expected.confidence_interval(0.95)
    assert (vip["status"], vip["score"], vip["rest_score"], vip["effect"]) == ("tested", 100.0, -100.0, 200.0)
    assert vip["ci95"] == {"low": ci.low, "high": ci.high} == {"low": 200.0, "high": 200.0}
    assert vip["p_value"] == expected.pvalue == 0.0
    assert (vip["p_adjusted"], vip["significant"]) == (0.0, True)
    assert (body["factors"][0]["factor"], body["factors"][0]["level"]) == ("tag", "vip")  # the smallest adjusted p first
    # Adjusted in one family with the lifecycle levels (p = 1 each: the same scores on both sides).
    stage = scipy_stats.ttest_ind([100, 100, -100, -100], [100, 100, -100, -100], equal_var=False).pvalue
    adjusted = multipletests([0.0, stage, stage], method="fdr_bh")[1]
    for level, p_adjusted in zip(["customer", "lead"], adjusted[1:], strict=True):
        assert by_level[("lifecycle_stage", level)]["p_adjusted"] == approx(p_adjusted)


async def test_window_days_decides_which_visits_count(client: httpx.AsyncClient, make: Factory, apply: EventApplier) -> None:
    survey = await _hand_worked_fixture(make, apply)
    params = {"metric": "ces", "survey_id": survey["id"], "min_n": 3}

    async def support_call(window_days: int) -> dict[str, Any]:
        body = (await client.get("/v1/analytics/drivers", params={**params, "window_days": window_days})).json()
        return next(f for f in body["factors"] if f["factor"] == "touchpoint" and f["level"] == "support-call")

    # The answers are at 12:00 on 20 Nov, the visits at 09:00 on 10 Nov: 10 days back reaches 12:00 on
    # 10 Nov, so they are left out and there is no such level at all; 11 days take them in.
    body = (await client.get("/v1/analytics/drivers", params={**params, "window_days": 10})).json()
    assert [f for f in body["factors"] if f["factor"] == "touchpoint"] == [
        _untested("touchpoint", "web-login", 1, 7, 2.0, 30 / 7)
    ]
    assert (await support_call(11))["n"] == 4
    # 90 days reaches 22 August: customer 5's visit of 15 September counts too: 3, 4, 2, 3, 7 against 6, 5, 2.
    wide = await support_call(90)
    assert (wide["n"], wide["rest_n"], wide["score"], wide["rest_score"]) == (5, 3, approx(3.8), approx(13 / 3))


async def test_drivers_filters_and_bad_input(client: httpx.AsyncClient, make: Factory, apply: EventApplier) -> None:
    survey = await _hand_worked_fixture(make, apply)
    # The window on the answer time leaves every answer out: no factors, no score.
    body = (await client.get("/v1/analytics/drivers", params={"metric": "ces", "from": "2026-11-21T00:00:00Z"})).json()
    assert (body["n"], body["anonymous"], body["score"], body["factors"]) == (0, 0, None, [])
    body = (await client.get("/v1/analytics/drivers", params={"metric": "ces", "touchpoint": "elsewhere"})).json()
    assert body["n"] == 0
    # Another metric has no answers.
    assert (await client.get("/v1/analytics/drivers", params={"metric": "nps"})).json()["factors"] == []

    async def problem(params: dict[str, Any], status: int) -> dict[str, Any]:
        r = await client.get("/v1/analytics/drivers", params=params)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        return dict(r.json())

    await problem({}, 422)
    await problem({"metric": "mood"}, 422)
    await problem({"metric": "ces", "window_days": 0}, 422)
    await problem({"metric": "ces", "window_days": 366}, 422)
    await problem({"metric": "ces", "min_n": 1}, 422)
    await problem({"metric": "ces", "from": "2026-11-21T00:00:00Z", "to": "2026-11-20T00:00:00Z"}, 422)
    await problem({"metric": "nps", "survey_id": survey["id"]}, 422)  # the survey measures ces
    await problem({"metric": "ces", "survey_id": str(uuid.uuid4())}, 404)


async def test_drivers_need_the_read_scope(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await client.get("/v1/analytics/drivers", params={"metric": "nps"}, headers={"Authorization": ""})
    assert r.status_code == 401
    r = await client.get("/v1/analytics/drivers", params={"metric": "nps"}, headers={"Authorization": f"Bearer {keys['read']}"})
    assert r.status_code == 200


async def test_drivers_are_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json", headers={"Authorization": ""})).json()
    op = spec["paths"]["/v1/analytics/drivers"]["get"]
    assert "Benjamini-Hochberg" in op["description"] and "Welch" in op["description"]
    report = spec["components"]["schemas"]["DriverReport"]
    assert report["examples"][0]["adjustment"] == "benjamini-hochberg"
    assert {"factor", "level", "n", "effect", "ci95", "p_value", "p_adjusted"} <= set(
        spec["components"]["schemas"]["DriverFactor"]["properties"]
    )


# --- generated answers with a planted effect, against scipy on the raw values ----------------------

NPS_VALUE = {"promoter": 100, "passive": 0, "detractor": -100}


def _category(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


async def test_planted_driver_is_found_and_null_factors_are_not(
    client: httpx.AsyncClient, make: Factory, session_factory: Any, cem_app: Any
) -> None:
    """600 customers, one NPS answer each. Those who had a support call in the 30 days before
    answering are detractors half the time (promoters 20%); the others promoters half the time
    (detractors 20%): a planted effect of about -60 NPS points. A tag, the lifecycle stage and a
    checkout visit are drawn independently of the score (null factors); some support calls
    happened 31-60 days before the answer and must not count."""
    rng = random.Random(20261202)
    survey = await make.survey("nps")
    snapshots, responses, scores, visits = [], [], [], []
    expected_groups: dict[tuple[str, str], list[bool]] = {}
    values: list[int] = []
    for i in range(600):
        cid = uuid.uuid4()
        tags = ["newsletter"] if rng.random() < 0.5 else []
        stage = rng.choice(["customer", "lead"])
        support = rng.random() < 0.3
        old_support = not support and rng.random() < 0.3
        checkout = rng.random() < 0.5
        weights = (0.5, 0.3, 0.2) if support else (0.2, 0.3, 0.5)  # detractor, passive, promoter
        band = rng.choices([(0, 6), (7, 8), (9, 10)], weights=weights)[0]
        score = rng.randint(*band)
        submitted = ANSWERED - dt.timedelta(minutes=i)
        snapshots.append(CustomerCreated(id=cid, email=f"c{i}@example.com", lifecycle_stage=stage, tags=tags))
        rid = uuid.uuid4()
        responses.append(
            {"id": rid, "survey_id": survey["id"], "customer_id": cid, "source": "api", "answers": [], "submitted_at": submitted}
        )
        scores.append(
            {
                "response_id": rid, "survey_id": survey["id"], "metric": "nps", "customer_id": cid, "score": score,
                "scale_min": 0, "scale_max": 10, "category": _category(score), "submitted_at": submitted,
                "submitted_on": submitted.date(),
            }
        )  # fmt: skip
        for kind, touchpoint, happened, days in [
            (support, "support-call", "support_ticket_closed", rng.uniform(0.1, 29.9)),
            (old_support, "support-call", "support_ticket_closed", rng.uniform(31, 60)),
            (checkout, "checkout", "purchase", rng.uniform(0.1, 29.9)),
        ]:
            if kind:
                visits.append(
                    {
                        "interaction_id": uuid.uuid4(), "customer_id": cid, "touchpoint": touchpoint, "type": happened,
                        "occurred_at": submitted - dt.timedelta(days=days), "details": {},
                    }
                )  # fmt: skip
        values.append(NPS_VALUE[_category(score)])
        for key, member in [
            (("touchpoint", "support-call"), support),
            (("interaction_type", "support_ticket_closed"), support),
            (("touchpoint", "checkout"), checkout),
            (("interaction_type", "purchase"), checkout),
            (("tag", "newsletter"), bool(tags)),
            (("lifecycle_stage", "customer"), stage == "customer"),
            (("lifecycle_stage", "lead"), stage == "lead"),
        ]:
            expected_groups.setdefault(key, []).append(member)
    async with session_factory() as session:
        await apply_customer_snapshots(session, snapshots, cem_app.state.customer_data)
        await session.execute(insert(SurveyResponse), responses)
        await session.execute(insert(Score), scores)
        await session.execute(insert(TouchpointInteraction), visits)
        await session.commit()

    r = await client.get("/v1/analytics/drivers", params={"metric": "nps", "survey_id": survey["id"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n"] == 600 and body["score"] == approx(sum(values) / 600)
    # Every customer has open deals of 0 (one band, nothing to compare with): too few on the other side.
    untested = [(f["factor"], f["level"], f["status"]) for f in body["factors"] if f["status"] != "tested"]
    assert untested == [("open_deal_value", "none", "too_few")]
    got = {(f["factor"], f["level"]): f for f in body["factors"] if f["status"] == "tested"}
    assert set(got) == set(expected_groups)
    keys = sorted(expected_groups)
    expected_p = []
    for key in keys:
        inside = [v for v, member in zip(values, expected_groups[key], strict=True) if member]
        outside = [v for v, member in zip(values, expected_groups[key], strict=True) if not member]
        result = scipy_stats.ttest_ind(inside, outside, equal_var=False)
        ci = result.confidence_interval(0.95)
        factor = got[key]
        assert (factor["n"], factor["rest_n"]) == (len(inside), len(outside)), key
        assert factor["effect"] == approx(sum(inside) / len(inside) - sum(outside) / len(outside)), key
        assert factor["ci95"] == {"low": approx(ci.low), "high": approx(ci.high)}, key
        assert factor["p_value"] == pytest.approx(result.pvalue, rel=1e-6), key
        expected_p.append(result.pvalue)
    for key, adjusted in zip(keys, multipletests(expected_p, method="fdr_bh")[1], strict=True):
        assert got[key]["p_adjusted"] == pytest.approx(adjusted, rel=1e-6), key
    # The planted driver comes first, large and significant; the null factors are not significant.
    assert [(f["factor"], f["level"]) for f in body["factors"][:2]] == [
        ("interaction_type", "support_ticket_closed"),
        ("touchpoint", "support-call"),
    ]
    planted = got[("touchpoint", "support-call")]
    assert planted["significant"] and planted["p_adjusted"] < 1e-6 and planted["effect"] < -30 and planted["ci95"]["high"] < 0
    assert [key for key, f in got.items() if f["significant"]] == [
        ("interaction_type", "support_ticket_closed"),
        ("touchpoint", "support-call"),
    ]
    # Factors come out by adjusted p.
    adjusted_in_order = [f["p_adjusted"] for f in body["factors"] if f["status"] == "tested"]
    assert adjusted_in_order == sorted(adjusted_in_order)
