"""NPS, CSAT and CES against fixtures worked out by hand (numbers in the comments), including no
answers at all, only skipped answers and a single answer; series, response rate, touchpoints."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cem.analytics import stats
from cem.analytics.schemas import MetricReport

NOV = "2026-11-{:02d}T10:00:00Z"


def approx(value: float) -> Any:
    return pytest.approx(value, abs=0.005)


# --- the formulas, by hand -------------------------------------------------------------------


def test_nps_formula_on_a_hand_worked_sample() -> None:
    # 3 promoters, 1 passive, 1 detractor: NPS = (3 - 1) / 5 * 100 = 40.
    # pp = .6, pd = .2: var = .6*.4 + .2*.8 + 2*.6*.2 = .24 + .16 + .24 = .64; se = sqrt(.64 / 5) = .357771
    # half width = 1.96 * .357771 * 100 = 70.1231 -> [-30.1231, 110.1231], clipped to 100.
    score, ci = stats.nps(3, 1, 1)
    assert score == approx(40.0)
    assert ci is not None and ci[0] == approx(-30.1231) and ci[1] == 100.0


def test_nps_formula_edge_cases() -> None:
    assert stats.nps(0, 0, 0) == (None, None)
    assert stats.nps(1, 0, 0) == (100.0, None)  # one answer: a score, no interval
    assert stats.nps(0, 0, 2) == (-100.0, (-100.0, -100.0))  # no spread at all


def test_the_documented_nps_example_is_what_the_formula_gives() -> None:
    # The example in the OpenAPI document, in all and per series point, as the report would show
    # its counts: the score and interval of stats.nps, rounded as the report rounds them.
    example = MetricReport.model_json_schema()["examples"][0]
    assert example["series"]
    for shown in [example, *example["series"]]:
        counts = shown["counts"]
        score, ci = stats.nps(counts["promoter"], counts["passive"], counts["detractor"])
        assert ci is not None
        assert shown["n"] == sum(counts.values())
        assert shown["score"] == stats.rounded(score)
        assert shown["ci95"] == {"low": stats.rounded(ci[0]), "high": stats.rounded(ci[1])}


def test_csat_wilson_interval_by_hand() -> None:
    # 3 of 5 satisfied: 60%. z = 1.96, z^2 = 3.8416; d = 1 + 3.8416/5 = 1.76832
    # centre = (.6 + 3.8416/10) / d = .556554; half = 1.96 * sqrt(.6*.4/5 + 3.8416/100) / d = .325831
    score, ci = stats.csat(3, 5)
    assert score == approx(60.0)
    assert ci is not None and ci[0] == approx(23.0723) and ci[1] == approx(88.2385)
    # One satisfied answer: d = 4.8416, centre = 2.9208 / d = .603272, half = 1.9208 / d = .396728.
    score, ci = stats.csat(1, 1)
    assert score == 100.0 and ci is not None and ci[0] == approx(20.6544) and ci[1] == approx(100.0)
    assert stats.csat(0, 0) == (None, None)


def test_ces_mean_interval_by_hand() -> None:
    # 7, 6, 5, 2: mean 5; squared deviations 4 + 1 + 0 + 9 = 14; sd = sqrt(14 / 3) = 2.160247
    # half = 1.96 * 2.160247 / sqrt(4) = 2.117042
    mean, ci = stats.mean_with_ci(7 + 6 + 5 + 2, 49 + 36 + 25 + 4, 4)
    assert mean == approx(5.0)
    assert ci is not None and ci[0] == approx(2.882958) and ci[1] == approx(7.117042)
    # On the 1-7 scale the interval stops at 7; the CES 2 and 6 of two answers: mean 4,
    # sd = sqrt(8), half = 1.96 * 2 = 3.92, so 0.08 to 7.92 before the cut.
    assert stats.mean_with_ci(7 + 6 + 5 + 2, 49 + 36 + 25 + 4, 4, (1, 7)) == (5.0, (approx(2.882958), 7))
    assert stats.mean_with_ci(2 + 6, 4 + 36, 2, (1, 7)) == (4.0, (1, 7))
    assert stats.mean_with_ci(4, 16, 1) == (4.0, None)
    assert stats.mean_with_ci(0, 0, 0) == (None, None)


# --- over HTTP, computed by the database -------------------------------------------------------


async def _custom_with_optional(make: Any, metric: str) -> dict[str, Any]:
    """A custom survey whose metric question may be skipped."""
    scales = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
    low, high = scales[metric]
    return await make.survey(
        "custom",
        questions=[
            {"id": "score", "type": "rating", "metric": metric, "text": "Score?", "scale_min": low, "scale_max": high},
            {"id": "why", "type": "text", "text": "Why?"},
        ],
    )


async def test_nps_with_no_answers_at_all(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    body = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()
    assert body["n"] == 0 and body["skipped"] == 0
    assert body["score"] is None and body["ci95"] is None and body["series"] == []
    assert body["response_rate"] == {
        "invitations": 0,
        "responded": 0,
        "rate": None,
        "answered_before_reminders": 0,
        "answered_after_reminder": [],
    }
    assert body["counts"] == {"promoter": 0, "passive": 0, "detractor": 0}


async def test_nps_with_only_skipped_answers(client: httpx.AsyncClient, make: Any) -> None:
    survey = await _custom_with_optional(make, "nps")
    await make.answer(survey["id"], {"why": "no idea"}, submitted_at=NOV.format(2))
    await make.answer(survey["id"], {"score": None, "why": "rather not say"}, submitted_at=NOV.format(3))
    body = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()
    assert body["n"] == 0 and body["skipped"] == 2
    assert body["score"] is None and body["ci95"] is None
    assert [(p["start"], p["n"], p["skipped"], p["score"]) for p in body["series"]] == [("2026-11-02T00:00:00Z", 0, 2, None)]


async def test_nps_with_a_single_answer(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    await make.answer(survey["id"], {"nps": 9}, submitted_at=NOV.format(4))
    body = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()
    assert body["n"] == 1 and body["score"] == 100.0 and body["ci95"] is None and body["mean"] == 9.0
    assert body["series"][0]["n"] == 1 and body["series"][0]["ci95"] is None


async def test_nps_skipped_answers_are_left_out_of_the_denominator(client: httpx.AsyncClient, make: Any) -> None:
    # 10, 10, 9 (promoters), 7 (passive), 3 (detractor) and two skipped: NPS 40 over n = 5, as above.
    survey = await _custom_with_optional(make, "nps")
    for score in [10, 10, 9, 7, 3, None, None]:
        await make.answer(survey["id"], {"score": score}, submitted_at=NOV.format(5))
    body = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()
    assert body["n"] == 5 and body["skipped"] == 2
    assert body["score"] == approx(40.0)
    assert body["ci95"] == {"low": approx(-30.1231), "high": 100.0}
    assert body["counts"] == {"promoter": 3, "passive": 1, "detractor": 1}
    assert body["mean"] == approx(39 / 5)


async def test_series_buckets_by_day_week_and_month_each_with_its_sample_size(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    # Fri 30 Oct: 9 | Mon 2 Nov: 10, 0 | Wed 4 Nov: 8 | Tue 10 Nov: 6
    for when, score in [("2026-10-30", 9), ("2026-11-02", 10), ("2026-11-02", 0), ("2026-11-04", 8), ("2026-11-10", 6)]:
        await make.answer(survey["id"], {"nps": score}, submitted_at=f"{when}T23:30:00Z")

    async def series(interval: str) -> list[tuple[str, int, float | None]]:
        body = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"], "interval": interval})).json()
        return [(p["start"][:10], p["n"], p["score"]) for p in body["series"]]

    assert await series("day") == [
        ("2026-10-30", 1, 100.0),
        ("2026-11-02", 2, 0.0),
        ("2026-11-04", 1, 0.0),
        ("2026-11-10", 1, -100.0),
    ]
    # Weeks start on Monday: 26 Oct holds the 30th; 2 Nov holds 10, 0, 8 -> (1 - 1) / 3 = 0; 9 Nov holds 6.
    assert await series("week") == [("2026-10-26", 1, 100.0), ("2026-11-02", 3, 0.0), ("2026-11-09", 1, -100.0)]
    # November: 10, 0, 8, 6 -> promoters 1, detractors 2 -> -25.
    assert await series("month") == [("2026-10-01", 1, 100.0), ("2026-11-01", 4, -25.0)]
    week = (await client.get("/v1/analytics/nps", params={"survey_id": survey["id"]})).json()["series"][1]
    # 1 promoter, 1 passive, 1 detractor: pp = pd = 1/3, var = 2/9 + 2/9 + 2/9 = 2/3, se = sqrt(2/9) = .471405
    assert week["ci95"] == {"low": approx(-92.3954), "high": approx(92.3954)}


async def test_window_and_touchpoint_filters(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    await make.touchpoint("delivery")
    survey = await make.survey("nps")
    await make.answer(survey["id"], {"nps": 10}, touchpoint="checkout", submitted_at="2026-11-01T00:00:00Z")
    await make.answer(survey["id"], {"nps": 2}, touchpoint="delivery", submitted_at="2026-11-05T00:00:00Z")
    await make.answer(survey["id"], {"nps": 9}, touchpoint="checkout", submitted_at="2026-11-20T00:00:00Z")
    only_checkout = (await client.get("/v1/analytics/nps", params={"touchpoint": "checkout"})).json()
    assert only_checkout["n"] == 2 and only_checkout["score"] == 100.0
    window = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-20T00:00:00Z"}
    windowed = (await client.get("/v1/analytics/nps", params=window)).json()
    assert windowed["n"] == 2 and windowed["score"] == 0.0  # from is inclusive, to exclusive
    assert windowed["filters"]["from"] == "2026-11-01T00:00:00Z"


async def test_csat_and_ces_reports_match_the_hand_worked_numbers(client: httpx.AsyncClient, make: Any) -> None:
    csat = await make.survey("csat")
    for score in [5, 4, 4, 3, 1]:
        await make.answer(csat["id"], {"csat": score}, submitted_at=NOV.format(3))
    body = (await client.get("/v1/analytics/csat")).json()
    assert body["n"] == 5 and body["score"] == approx(60.0)
    assert body["ci95"] == {"low": approx(23.0723), "high": approx(88.2385)}
    assert body["counts"] == {"positive": 3, "neutral": 1, "negative": 1}
    assert body["scale"] == {"min": 1, "max": 5}

    ces = await make.survey("ces")
    for score in [7, 6, 5, 2]:
        await make.answer(ces["id"], {"ces": score}, submitted_at=NOV.format(3))
    body = (await client.get("/v1/analytics/ces")).json()
    assert body["n"] == 4 and body["score"] == approx(5.0)
    assert body["ci95"] == {"low": approx(2.882958), "high": 7.0}  # 7.117042, cut at the scale's top
    assert body["counts"] == {"positive": 3, "neutral": 0, "negative": 1}


async def test_csat_and_ces_single_answer_and_no_answers(client: httpx.AsyncClient, make: Any) -> None:
    assert (await client.get("/v1/analytics/ces")).json()["score"] is None
    ces = await make.survey("ces")
    await make.answer(ces["id"], {"ces": 4})
    body = (await client.get("/v1/analytics/ces")).json()
    assert body["n"] == 1 and body["score"] == 4.0 and body["ci95"] is None
    csat = await make.survey("csat")
    await make.answer(csat["id"], {"csat": 5})
    body = (await client.get("/v1/analytics/csat")).json()
    assert body["score"] == 100.0 and body["ci95"] == {"low": approx(20.6544), "high": approx(100.0)}


async def test_response_rate_counts_answered_invitations(client: httpx.AsyncClient, make: Any) -> None:
    survey = await make.survey("nps")
    invitations = [await make.invitation(survey["id"]) for _ in range(4)]
    for inv in invitations[:3]:
        r = await client.post("/v1/responses", json={"token": inv["token"], "answers": {"nps": 9}})
        assert r.status_code == 201, r.text
    other = await make.survey("csat")
    await make.invitation(other["id"])  # a CSAT invitation does not count for NPS
    body = (await client.get("/v1/analytics/nps")).json()
    assert body["response_rate"] == {
        "invitations": 4,
        "responded": 3,
        "rate": 0.75,
        "answered_before_reminders": 3,
        "answered_after_reminder": [],
    }


async def test_survey_filter_must_exist_and_measure_the_metric(client: httpx.AsyncClient, make: Any) -> None:
    csat = await make.survey("csat")
    r = await client.get("/v1/analytics/nps", params={"survey_id": csat["id"]})
    assert r.status_code == 422 and "measures csat" in r.json()["detail"]
    r = await client.get("/v1/analytics/nps", params={"survey_id": "6a2b1c3d-0000-4000-8000-000000000000"})
    assert r.status_code == 404


async def test_bad_analytics_parameters_are_422(client: httpx.AsyncClient) -> None:
    for params in [
        {"interval": "year"},
        {"from": "yesterday"},
        {"from": "2026-11-01T00:00:00"},  # no offset
        {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"survey_id": "nope"},
        {"from": "99999-01-01T00:00:00Z"},
    ]:
        r = await client.get("/v1/analytics/nps", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"] == "application/problem+json"


# Windows at the ends of the calendar: a `from` late on its last day holds no whole day (the
# next midnight is past the calendar), and the very first instants.
CALENDAR_EDGE_WINDOWS: list[dict[str, str]] = [
    {"from": "9999-12-31T12:00:00Z"},
    {"from": "9999-12-31T23:59:59.999999Z"},
    {"from": "9999-12-31T00:00:00Z"},
    {"from": "9999-12-31T12:00:00Z", "to": "9999-12-31T13:00:00Z"},
    {"to": "9999-12-31T23:59:59.999999Z"},
    {"to": "0001-01-01T00:00:00.000001Z"},
    {"from": "0001-01-01T00:00:00Z", "to": "0001-01-01T12:00:00Z"},
]


async def test_every_answer_report_answers_a_window_at_the_ends_of_the_calendar(client: httpx.AsyncClient, make: Any) -> None:
    await make.touchpoint("checkout")
    survey = await make.survey("nps", touchpoint="checkout")
    await make.answer(survey["id"], {"nps": 9})
    journey = (await client.post("/v1/journeys", json={"name": "Edge", "stages": []})).json()
    reports: list[tuple[str, dict[str, str]]] = [
        ("/v1/analytics/nps", {}),
        ("/v1/analytics/csat", {}),
        ("/v1/analytics/ces", {}),
        ("/v1/analytics/nps", {"touchpoint": "checkout"}),
        ("/v1/analytics/nps", {"interval": "month"}),
        ("/v1/analytics/nps", {"interval": "day"}),
        ("/v1/analytics/themes", {"metric": "nps"}),
        ("/v1/analytics/drivers", {"metric": "nps"}),
        ("/v1/analytics/recovery", {}),
        ("/v1/analytics/suppressions", {}),
        ("/v1/analytics/sentiment", {}),
        ("/v1/analytics/touchpoints", {}),
        (f"/v1/analytics/journeys/{journey['id']}", {}),
        (f"/v1/surveys/{survey['id']}/results", {}),
    ]
    failures = []
    for url, fixed in reports:
        for window in CALENDAR_EDGE_WINDOWS:
            r = await client.get(url, params=fixed | window)
            if r.status_code != 200:
                failures.append((url, fixed | window, r.status_code, r.text[:200]))
    assert failures == []
    # Nothing was answered in those windows.
    late = (await client.get("/v1/analytics/nps", params=CALENDAR_EDGE_WINDOWS[0])).json()
    assert (late["n"], late["score"], late["series"]) == (0, None, [])
    results = (await client.get(f"/v1/surveys/{survey['id']}/results", params=CALENDAR_EDGE_WINDOWS[0])).json()
    assert all(q["answered"] == 0 for q in results["questions"])


async def test_touchpoints_report_gap_to_target(client: httpx.AsyncClient, make: Any, session_factory: Any) -> None:
    await make.touchpoint("checkout", target_metric="nps", target_score=40)
    await make.touchpoint("delivery", target_metric="csat", target_score=90)
    await make.touchpoint("support-call")
    nps = await make.survey("nps", touchpoint="checkout")
    csat = await make.survey("csat", touchpoint="delivery")
    invited = [await make.invitation(nps["id"]) for _ in range(2)]
    # checkout: 10, 9, 6 -> NPS (2 - 1) / 3 = 33.33, 6.67 below its promise of 40
    await client.post("/v1/responses", json={"token": invited[0]["token"], "answers": {"nps": 10}})
    await make.answer(nps["id"], {"nps": 9})
    await make.answer(nps["id"], {"nps": 6})
    # delivery: 5, 5, 4, 4 -> CSAT 100%, 10 above 90
    for score in [5, 5, 4, 4]:
        await make.answer(csat["id"], {"csat": score})
    await _interactions(session_factory, [("checkout", "purchase")] * 3 + [("support-call", "call")])

    body = (await client.get("/v1/analytics/touchpoints")).json()
    by_key = {t["touchpoint"]: t for t in body["items"]}
    assert list(by_key) == ["checkout", "delivery", "support-call"]
    checkout = by_key["checkout"]
    assert (checkout["interactions"], checkout["invitations"], checkout["responses"]) == (3, 2, 3)
    assert checkout["response_rate"] == 0.5
    assert checkout["nps"]["n"] == 3 and checkout["nps"]["score"] == approx(33.3333)
    assert checkout["target"] == {"metric": "nps", "score": 40.0} and checkout["gap"] == approx(-6.6667)
    delivery = by_key["delivery"]
    assert delivery["csat"]["score"] == 100.0 and delivery["gap"] == approx(10.0)
    support = by_key["support-call"]
    assert support["interactions"] == 1 and support["target"] is None and support["gap"] is None
    assert support["nps"] == {"n": 0, "score": None, "ci95": None}
    page = (await client.get("/v1/analytics/touchpoints", params={"limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (await client.get("/v1/analytics/touchpoints", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [t["touchpoint"] for t in rest["items"]] == ["support-call"]


async def _interactions(session_factory: Any, rows: list[tuple[str, str]]) -> None:
    import datetime as dt
    import uuid

    from cem.touchpoints.models import TouchpointInteraction

    async with session_factory() as session:
        for touchpoint, kind in rows:
            session.add(
                TouchpointInteraction(
                    interaction_id=uuid.uuid4(), touchpoint=touchpoint, type=kind, occurred_at=dt.datetime.now(dt.UTC)
                )
            )
        await session.commit()


@pytest.mark.parametrize(
    ("metric", "single", "expected_single"),
    [("nps", 6, -100.0), ("csat", 2, 0.0), ("ces", 6, 6.0)],
)
async def test_each_metric_with_no_answers_only_skipped_then_one_answer(
    client: httpx.AsyncClient, make: Any, metric: str, single: int, expected_single: float
) -> None:
    survey = await _custom_with_optional(make, metric)
    url = f"/v1/analytics/{metric}"
    empty = (await client.get(url)).json()
    assert (empty["n"], empty["skipped"], empty["score"], empty["ci95"], empty["series"]) == (0, 0, None, None, [])
    await make.answer(survey["id"], {"why": "skipped it"}, submitted_at=NOV.format(9))
    skipped = (await client.get(url)).json()
    assert (skipped["n"], skipped["skipped"], skipped["score"], skipped["ci95"]) == (0, 1, None, None)
    await make.answer(survey["id"], {"score": single}, submitted_at=NOV.format(9))
    one = (await client.get(url)).json()
    assert (one["n"], one["skipped"], one["score"], one["mean"]) == (1, 1, expected_single, float(single))
    if metric == "csat":  # Wilson still bounds a single answer: 0 of 1 -> [0, 79.35]
        assert one["ci95"] == {"low": 0.0, "high": approx(79.3456)}
    else:
        assert one["ci95"] is None
    assert [(p["n"], p["skipped"]) for p in one["series"]] == [(1, 1)]
