"""The CEM dashboard over HTTP (no browser): sign-in with an API key, a bad key, sign-out, forms
refused without their token, the session cookie refused by the JSON API, the empty state, and
the charts holding the numbers `/v1/analytics/...` gives."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from cem.followups.models import Followup
from cxkit.dashboard.sessions import COOKIE
from cxkit.testing import chart_values, dashboard_sign_in, form_token

NOV = "2026-11-{:02d}T10:00:00Z"


@pytest.fixture
async def browser(cem_app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client without an API key that keeps cookies, as a browser does (after `client`, so the
    tables are emptied after the test)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cem_app), base_url="http://cem") as c:
        yield c


async def test_dashboard_asks_to_sign_in_first(browser: httpx.AsyncClient) -> None:
    r = await browser.get("/dashboard", params={"interval": "month"})
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/sign-in?next=%2Fdashboard%3Finterval%3Dmonth"
    page = await browser.get(r.headers["location"])
    assert page.status_code == 200 and "<script" not in page.text
    assert 'name="next" value="/dashboard?interval=month"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_sign_in_with_a_read_key_keeps_a_signed_http_only_cookie(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await dashboard_sign_in(browser, keys["read"])
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age"} <= attributes and "secure" not in attributes  # served over http here
    assert "samesite=lax" in cookie.lower() and "path=/dashboard" in cookie.lower()
    assert keys["read"] not in cookie  # the key itself never goes into the cookie
    page = await browser.get("/dashboard")
    assert page.status_code == 200
    assert "Sign out" in page.text and page.headers["cache-control"] == "no-store"


async def test_cookie_is_secure_when_served_over_https(cem_app: FastAPI, keys: dict[str, str]) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cem_app), base_url="https://cem") as c:
        r = await dashboard_sign_in(c, keys["read"])
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


async def test_bad_key_is_refused_and_signs_nobody_in(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await dashboard_sign_in(browser, "cx_not-a-key")
    assert r.status_code == 401
    assert "unknown, revoked or expired" in r.text and 'aria-invalid="true"' in r.text
    r = await dashboard_sign_in(browser, "   ")
    assert r.status_code == 422 and "Enter an API key" in r.text
    assert (await browser.get("/dashboard")).status_code == 303


async def test_key_without_read_scope_is_refused(browser: httpx.AsyncClient, cem_app: FastAPI) -> None:
    from cem.db import ApiKey
    from cxkit.testing import key_without_read_scope

    key = await key_without_read_scope(cem_app.state.session_factory, ApiKey)
    r = await dashboard_sign_in(browser, key)
    assert r.status_code == 403 and "read" in r.text
    assert (await browser.get("/dashboard")).status_code == 303


async def test_forms_without_their_session_token_are_refused(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    # Sign-in: no token, a made-up one, and one from another browser's session.
    for token in ("", "forged"):
        await browser.get("/dashboard/sign-in")
        r = await browser.post("/dashboard/sign-in", data={"api_key": keys["read"], "form_token": token})
        assert r.status_code == 403 and "Form refused" in r.text
    async with httpx.AsyncClient(transport=browser._transport, base_url="http://cem") as other:
        foreign = form_token((await other.get("/dashboard/sign-in")).text)
    await browser.get("/dashboard/sign-in")
    r = await browser.post("/dashboard/sign-in", data={"api_key": keys["read"], "form_token": foreign})
    assert r.status_code == 403
    assert (await browser.get("/dashboard")).status_code == 303
    # Sign-out without the page's token changes nothing.
    await dashboard_sign_in(browser, keys["read"])
    r = await browser.post("/dashboard/sign-out", data={"form_token": foreign})
    assert r.status_code == 403
    assert (await browser.get("/dashboard")).status_code == 200


async def test_sign_out_ends_the_session(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    await dashboard_sign_in(browser, keys["read"])
    page = await browser.get("/dashboard")
    r = await browser.post("/dashboard/sign-out", data={"form_token": form_token(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/sign-in"
    assert f'{COOKIE}=""' in r.headers["set-cookie"] and "max-age=0" in r.headers["set-cookie"].lower()
    assert (await browser.get("/dashboard")).status_code == 303


async def test_the_session_cookie_does_not_authenticate_the_json_api(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await dashboard_sign_in(browser, keys["admin"])
    session = r.cookies[COOKIE]
    for path in ("/v1/analytics/nps", "/v1/surveys", "/v1/analytics/touchpoints"):
        answer = await browser.get(path, headers={"Cookie": f"{COOKIE}={session}"})
        assert answer.status_code == 401, path
        assert answer.headers["content-type"] == "application/problem+json"
    write = await browser.post("/v1/surveys", json={"name": "x", "kind": "nps"}, headers={"Cookie": f"{COOKIE}={session}"})
    assert write.status_code == 401


async def test_a_forged_or_tampered_cookie_is_not_a_session(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await dashboard_sign_in(browser, keys["read"])
    good = r.cookies[COOKIE]
    browser.cookies.clear()
    tampered = good[:5] + ("x" if good[5] != "x" else "y") + good[6:]
    for value in (tampered, "eyJzaWQiOiJ4Iiwia2V5IjoiYSJ9.x.y"):
        answer = await browser.get("/dashboard", headers={"Cookie": f"{COOKIE}={value}"})
        assert answer.status_code == 303


async def test_empty_state_says_how_to_create_a_survey(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    await dashboard_sign_in(browser, keys["read"])
    page = await browser.get("/dashboard")
    assert page.status_code == 200
    assert "No surveys yet" in page.text
    assert "curl -X POST http://cem/v1/surveys" in page.text and "make demo" in page.text
    assert chart_values(page.text, "chart-nps") == []


async def _seed(client: httpx.AsyncClient, make: Any) -> dict[str, Any]:
    await make.touchpoint("checkout", target_metric="nps", target_score=40)
    await make.touchpoint("delivery", target_metric="csat", target_score=90)
    nps = await make.survey("nps", name="Checkout NPS", touchpoint="checkout")
    csat = await make.survey("csat", name="Delivery CSAT", touchpoint="delivery")
    ces = await make.survey("ces", name="Support CES")
    for day, score in [(2, 10), (3, 9), (3, 3), (10, 8), (11, 10), (17, 6), (18, 2), (24, 9)]:
        reason = "Quick checkout" if score >= 9 else "The checkout page kept timing out"
        await make.answer(nps["id"], {"nps": score, "reason": reason}, touchpoint="checkout", submitted_at=NOV.format(day))
    # A known customer's detractor answer: a follow-up, counted in the recovery figures.
    who = str(await make.customer())
    await make.answer(nps["id"], {"nps": 4}, touchpoint="checkout", customer_id=who, submitted_at=NOV.format(25))
    for day, score in [(4, 5), (5, 4), (12, 2), (19, 5)]:
        await make.answer(csat["id"], {"csat": score}, touchpoint="delivery", submitted_at=NOV.format(day))
    for day, score in [(6, 7), (6, 5), (20, 3)]:
        await make.answer(ces["id"], {"ces": score}, submitted_at=NOV.format(day))
    await make.invitation(nps["id"])
    for day, text in [
        (21, "Terrible: the parcel never came and nobody answered, awful."),
        (22, "Broken link, useless: https://shop.example.com/orders/4419021/tracking?ref=abcdefghijklmnopqrstuvwxyz0123456789"),
    ]:
        given = await client.post(
            "/v1/feedback", json={"channel": "email", "touchpoint": "delivery", "text": text, "received_at": NOV.format(day)}
        )
        assert given.json()["sentiment"]["label"] == "negative", given.text
    return {"nps": nps, "csat": csat, "ces": ces}


def _points(report: dict[str, Any], value: str = "score") -> list[dict[str, str]]:
    """What the chart should hold for an API report: one point per bucket with a `value`."""
    return [
        {
            "label": p["start"][:10],
            "value": str(p[value]),
            "n": str(p["n"]),
            **({"low": str(p["ci95"]["low"]), "high": str(p["ci95"]["high"])} if p["ci95"] else {}),
        }
        for p in report["series"]
        if p[value] is not None
    ]


async def test_charts_hold_the_numbers_of_the_json_api(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    surveys = await _seed(client, make)
    await dashboard_sign_in(browser, keys["read"])
    page = await browser.get("/dashboard")
    assert page.status_code == 200
    assert "<script" not in page.text  # works with JavaScript off: there is none (and the CSP allows none)
    for metric in ("nps", "csat", "ces"):
        report = (await client.get(f"/v1/analytics/{metric}")).json()
        assert len(report["series"]) >= 2
        assert chart_values(page.text, f"chart-{metric}") == _points(report), metric
    touchpoints = (await client.get("/v1/analytics/touchpoints")).json()["items"]
    gaps = [{"label": t["name"], "value": str(t["gap"])} for t in touchpoints if t["target"]]
    assert chart_values(page.text, "chart-gap") == gaps and len(gaps) == 2
    suppressions = (await client.get("/v1/analytics/suppressions")).json()
    assert [int(b["value"]) for b in chart_values(page.text, "chart-suppressions")] == list(suppressions["reasons"].values())
    recovery = (await client.get("/v1/analytics/recovery")).json()
    steps = ["detractors", "followed_up", "answered_again", "recovered"]
    assert [int(b["value"]) for b in chart_values(page.text, "chart-recovery")] == [recovery[s] for s in steps]
    assert recovery["detractors"] == 1

    # Filters: a survey, a touchpoint and a period, as the API takes them (`to` is a day, included).
    params = {
        "survey_id": surveys["nps"]["id"],
        "touchpoint": "checkout",
        "from": "2026-11-03",
        "to": "2026-11-17",
        "interval": "day",
    }
    page = await browser.get("/dashboard", params=params)
    assert page.status_code == 200
    api = {"survey_id": params["survey_id"], "touchpoint": "checkout", "from": "2026-11-03T00:00:00Z",
           "to": "2026-11-18T00:00:00Z", "interval": "day"}  # fmt: skip
    report = (await client.get("/v1/analytics/nps", params=api)).json()
    assert report["n"] == 5  # 9, 3, 8, 10, 6
    assert chart_values(page.text, "chart-nps") == _points(report)
    assert chart_values(page.text, "chart-csat") == [] and 'id="chart-csat"' not in page.text
    assert "measures NPS" in page.text


async def test_bad_filters_show_a_message_not_an_error(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    await make.survey("nps")
    await dashboard_sign_in(browser, keys["read"])
    for params, status, text in [
        ({"survey_id": "nope"}, 422, "not a valid id"),
        ({"from": "2026-13-01"}, 422, "not a date"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, 422, "on or before"),
        ({"interval": "year"}, 422, "day, week or month"),
        ({"survey_id": "00000000-0000-4000-8000-000000000000"}, 404, "does not exist"),
        # PostgreSQL cannot compare text holding NUL: refused as the API's QueryText refuses it.
        ({"touchpoint": "\x00"}, 422, "must not contain NUL characters"),
        ({"touchpoint": "check\x00out"}, 422, "must not contain NUL characters"),
        ({"touchpoint": "checkout", "survey_id": "\x00"}, 422, "not a valid id"),
        ({"from": "2026-11-01\x00"}, 422, "not a date"),
        ({"interval": "week\x00"}, 422, "day, week or month"),
    ]:
        page = await browser.get("/dashboard", params=params)
        assert page.status_code == status, (params, page.text[:300])
        assert text in page.text and "Showing everything instead" in page.text


async def test_a_period_to_the_calendars_last_day_is_open_ended_as_the_api_answers_it(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    # `to` is a day, included: 9999-12-31 runs to the end of the calendar, past which no time is,
    # so the period has no end; the API answers that window (`from` alone) with the same numbers.
    survey = await make.survey("nps")
    for day, score in [(3, 9), (10, 2)]:
        await make.answer(survey["id"], {"nps": score}, submitted_at=NOV.format(day))
    await dashboard_sign_in(browser, keys["read"])
    report = (await client.get("/v1/analytics/nps", params={"from": "2026-11-01T00:00:00Z", "interval": "day"})).json()
    assert report["n"] == 2
    for to in ("9999-12-31", "99991231"):
        page = await browser.get("/dashboard", params={"from": "2026-11-01", "to": to, "interval": "day"})
        assert page.status_code == 200, (to, page.text[:300])
        assert "Showing everything instead" not in page.text
        assert chart_values(page.text, "chart-nps") == _points(report), to
    last_day = await browser.get("/dashboard", params={"from": "9999-12-31", "to": "9999-12-31"})
    assert last_day.status_code == 200, last_day.text[:300]
    assert chart_values(last_day.text, "chart-nps") == []
    only_to = await browser.get("/dashboard", params={"to": "9999-12-31"})
    assert only_to.status_code == 200 and "Showing everything instead" not in only_to.text


async def test_a_revoked_key_ends_its_session(browser: httpx.AsyncClient, cem_app: FastAPI) -> None:
    from sqlalchemy import update

    from cem.db import ApiKey
    from cxkit.db import utcnow
    from cxkit.http.auth import create_api_key

    async with cem_app.state.session_factory() as session:
        row, key = await create_api_key(session, ApiKey, name="dashboard", scopes=["read"])
        await session.commit()
    await dashboard_sign_in(browser, key)
    assert (await browser.get("/dashboard")).status_code == 200
    async with cem_app.state.session_factory() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=utcnow()))
        await session.commit()
    cem_app.state.auth.clear()  # as if the key cache's few seconds had passed
    assert (await browser.get("/dashboard")).status_code == 303


async def test_sign_in_returns_only_to_a_dashboard_page(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    for wanted, lands in [
        ("/dashboard?interval=month", "/dashboard?interval=month"),
        ("//evil.example/dashboard", "/dashboard"),
        ("https://evil.example/dashboard", "/dashboard"),
        ("/dashboardx", "/dashboard"),
        ("/v1/surveys", "/dashboard"),
    ]:
        token = form_token((await browser.get("/dashboard/sign-in")).text)
        r = await browser.post("/dashboard/sign-in", data={"api_key": keys["read"], "form_token": token, "next": wanted})
        assert r.status_code == 303 and r.headers["location"] == lands, wanted


def test_recovery_shows_the_sla_figures_one_a_line() -> None:
    from cem.analytics.schemas import RecoveryReport
    from cem.dashboard.router import recovery_extras

    timing = {
        "followups": 4,
        "time_to_first_action": {"n": 3, "median_hours": 2.5, "p90_hours": None},
        "time_to_close": {"n": 2, "median_hours": 20.0, "p90_hours": 30.0},
        "within_sla": {"due": 2, "within": 1, "share": 0.5},
    }
    report = RecoveryReport(
        detractors=2,
        followed_up=1,
        answered_again=1,
        recovered=1,
        followup_rate=0.5,
        recovery_rate=1.0,
        definition="d",
        filters={"survey_id": None, "touchpoint": None, "from": None, "to": None},
        by_metric={},
        interval="week",
        timing=timing,
        periods=[{"start": "2026-11-02T00:00:00Z", **timing}],
    )
    assert recovery_extras(report) == {
        "followups": 4,
        "time_to_first_action n": 3,
        "time_to_first_action median_hours": 2.5,
        "time_to_first_action p90_hours": None,
        "time_to_close n": 2,
        "time_to_close median_hours": 20.0,
        "time_to_close p90_hours": 30.0,
        "within_sla due": 2,
        "within_sla within": 1,
        "within_sla share": 0.5,
    }


async def test_each_score_shows_what_its_comments_say_as_the_themes_api_does(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    survey = await make.survey("nps", name="Themes NPS")
    for i in range(12):  # detractors and passives about the delivery, promoters and passives about the staff
        await make.answer(survey["id"], {"nps": 2 if i % 2 else 8, "reason": "Slow delivery"})
        await make.answer(survey["id"], {"nps": 10 if i % 2 else 7, "reason": "Friendly staff"})
    await make.answer(survey["id"], {"nps": 9})
    await dashboard_sign_in(browser, keys["read"])
    page = await browser.get("/dashboard", params={"survey_id": survey["id"]})
    assert page.status_code == 200

    api = (await client.get("/v1/analytics/themes", params={"metric": "nps", "survey_id": survey["id"], "limit": 10})).json()
    assert {t["stem"] for t in api["themes"]} == {"deliveri", "slow", "friend", "staff"}
    bars = [{"label": t["theme"], "value": str(t["effect"])} for t in api["themes"] if t["effect"] is not None]
    assert chart_values(page.text, "chart-themes-nps") == bars
    assert {b["label"]: float(b["value"]) for b in bars} == {
        "delivery": -100.0,
        "slow": -100.0,
        "friendly": 100.0,
        "staff": 100.0,
    }
    assert "24 comments" in page.text and "1 answer came without one" in page.text
    assert 'id="table-themes-nps"' in page.text and 'id="chart-themes-csat"' not in page.text


async def test_a_selected_survey_shows_its_results_question_by_question_as_the_api_does(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    questions = [
        {"id": "score", "type": "rating", "text": "How easy was it?", "scale_min": 1, "scale_max": 5},
        {"id": "liked", "type": "multi_choice", "text": "What did you like?", "options": ["Price", "Staff"]},
        {"id": "why", "type": "text", "text": "Why?"},
    ]
    survey = await make.survey("custom", name="Store visit", questions=questions)
    for score, liked, why in [(5, ["Price", "Staff"], "<script>alert(1)</script>"), (4, ["Staff"], None), (2, [], "Slow")]:
        await make.answer(survey["id"], {"score": score, "liked": liked, "why": why})
    await dashboard_sign_in(browser, keys["read"])
    page = await browser.get("/dashboard", params={"survey_id": survey["id"]})
    assert page.status_code == 200

    results = (await client.get(f"/v1/surveys/{survey['id']}/results")).json()
    by_id = {q["id"]: q for q in results["questions"]}
    for qid in ("score", "liked"):
        expected = [{"label": v["value"], "value": str(round(v["share"] * 100, 2))} for v in by_id[qid]["values"]]
        assert chart_values(page.text, f"chart-q-{qid}") == expected, qid
    assert [b["value"] for b in chart_values(page.text, "chart-q-liked")] == ["50.0", "100.0"]  # of the 2 who answered
    assert "3 responses in this period" in page.text and "mean 3.67 on a scale of 1 to 5" in page.text
    # The newest text answers are shown as text, never as markup.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script" not in page.text
    assert "<q>Slow</q>" in page.text
    # Without a survey selected there is no such section.
    assert 'id="results"' not in (await browser.get("/dashboard")).text


def _negative_feedback_shown(page: str) -> list[str]:
    """The texts of the page's list of the latest negative feedback, as the HTML has them."""
    section = re.search(r'<ul class="latest" aria-label="Latest negative feedback">(.*?)</ul>', page, re.S)
    return re.findall(r"<q>(.*?)</q>", section.group(1), re.S) if section else []


async def test_the_newest_negative_feedback_is_shown_as_text_as_the_feedback_api_lists_it(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    await make.touchpoint("delivery")
    await make.survey("nps", name="Feedback NPS")
    given = [
        ("Terrible, the parcel never came. Awful.", "delivery", 10),
        ("<script>alert(1)</script> awful, broken and useless", None, 11),
        ("Great service, thank you so much!", "delivery", 12),
        ("Horrible support, very bad and rude", None, 13),
        ("Bad, bad, bad: the worst delivery ever", "delivery", 2),  # before the window below
    ]
    for text, touchpoint, day in given:
        about = {"touchpoint": touchpoint} if touchpoint else {}
        body = {"channel": "chat", "text": text, "received_at": NOV.format(day), **about}
        assert (await client.post("/v1/feedback", json=body)).status_code == 201
    await dashboard_sign_in(browser, keys["read"])

    # The page's filters (`to` is a day, included) and the same as the API takes them.
    for params, api in (
        ({}, {}),
        ({"touchpoint": "delivery"}, {"touchpoint": "delivery"}),
        ({"from": "2026-11-05", "to": "2026-11-30"}, {"from": "2026-11-05T00:00:00Z", "to": "2026-12-01T00:00:00Z"}),
    ):
        page = await browser.get("/dashboard", params=params)
        assert page.status_code == 200, params
        listed = (await client.get("/v1/feedback", params={"sentiment": "negative", **api})).json()["items"]
        assert listed, params
        assert [html.unescape(t) for t in _negative_feedback_shown(page.text)] == [f["text"] for f in listed], params
    everything = (await browser.get("/dashboard")).text
    assert len(_negative_feedback_shown(everything)) == 4  # every negative one; the thanks is not negative
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in everything and "<script>alert" not in everything
    assert _negative_feedback_shown((await browser.get("/dashboard", params={"touchpoint": "delivery"})).text) == [
        "Terrible, the parcel never came. Awful.",
        "Bad, bad, bad: the worst delivery ever",
    ]


def _table_rows(page: str, table_id: str) -> list[list[str]]:
    """The body rows of a table on the page, each as its cells' text."""
    table = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert table, table_id
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    ]


async def test_the_feedback_sentiment_is_charted_as_the_sentiment_api_counts_it(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, keys: dict[str, str]
) -> None:
    await make.touchpoint("delivery")
    await make.survey("nps", name="Feedback NPS")
    await dashboard_sign_in(browser, keys["read"])
    empty = (await browser.get("/dashboard")).text
    assert 'id="sentiment"' in empty and "No feedback with these filters yet" in empty
    assert 'id="chart-sentiment"' not in empty
    given = [
        ("Great service, thank you so much!", "delivery", "chat", 2),
        ("Terrible, the parcel never came. Awful.", "delivery", "email", 3),
        ("The store opens at nine.", None, "chat", 9),
        ("Lovely staff, a quick refund.", None, "app_store", 10),
        ("Bad, bad, bad: the worst delivery ever", "delivery", "chat", 17),
        ("Good.", "delivery", "chat", 18),
    ]
    for text, touchpoint, channel, day in given:
        about = {"touchpoint": touchpoint} if touchpoint else {}
        body = {"channel": channel, "text": text, "received_at": NOV.format(day), **about}
        assert (await client.post("/v1/feedback", json=body)).status_code == 201

    # The page's filters (`to` is a day, included) and the same as the API takes them.
    for params, api in (
        ({}, {}),
        ({"touchpoint": "delivery"}, {"touchpoint": "delivery"}),
        (
            {"from": "2026-11-03", "to": "2026-11-17", "interval": "day"},
            {"from": "2026-11-03T00:00:00Z", "to": "2026-11-18T00:00:00Z", "interval": "day"},
        ),
    ):
        page = (await browser.get("/dashboard", params=params)).text
        report = (await client.get("/v1/analytics/sentiment", params=api)).json()
        assert report["n"] >= 3, params
        assert chart_values(page, "chart-sentiment") == _points(report, "net_sentiment"), params
        assert [row[:4] for row in _table_rows(page, "table-sentiment")] == [
            [p["start"][:10], str(p["counts"]["positive"]), str(p["counts"]["neutral"]), str(p["counts"]["negative"])]
            for p in report["series"]
        ], params
        assert [row[:2] for row in _table_rows(page, "table-sentiment-channels")] == [
            [c["channel"], str(c["n"])] for c in report["by_channel"]
        ], params
    weekly = (await client.get("/v1/analytics/sentiment")).json()
    assert [p["n"] for p in weekly["series"]] == [2, 2, 2]  # the weeks of 2, 9 and 16 November


async def test_overdue_followups_are_shown_as_the_followups_api_lists_them(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, make: Any, session_factory: Any, keys: dict[str, str]
) -> None:
    await make.touchpoint("delivery")
    nps = await make.survey("nps", name="Delivery NPS", touchpoint="delivery")
    csat = await make.survey("csat", name="Support CSAT")
    late, also_late, on_time = [await make.customer() for _ in range(3)]
    await make.answer(nps["id"], {"nps": 1}, customer_id=str(late))
    await make.answer(csat["id"], {"csat": 2}, customer_id=str(also_late))
    await make.answer(nps["id"], {"nps": 4}, customer_id=str(on_time))
    now = dt.datetime.now(dt.UTC)
    async with session_factory() as session, session.begin():
        for customer, hours_ago in ((late, 30), (also_late, 50)):
            await session.execute(
                update(Followup).where(Followup.customer_id == customer).values(due_at=now - dt.timedelta(hours=hours_ago))
            )
    await dashboard_sign_in(browser, keys["read"])

    for params in ({}, {"touchpoint": "delivery"}, {"survey_id": csat["id"]}):
        page = await browser.get("/dashboard", params=params)
        assert page.status_code == 200, params
        listed = (await client.get("/v1/followups", params={"overdue": "true", **params})).json()["items"]
        assert listed, params
        shown = [f"{f['customer_name']} ({f['customer_email']})" for f in listed]
        assert [row[2] for row in _table_rows(page.text, "table-overdue")] == shown, params
    rows = _table_rows((await browser.get("/dashboard")).text, "table-overdue")
    assert [row[:2] for row in rows] == [["CSAT 2", "\u2013"], ["NPS 1", "delivery"]]
    assert rows[0][2] == f"Ada Lovelace ({also_late.hex[:8]}@example.com)"
    tomorrow = (now + dt.timedelta(days=1)).date().isoformat()
    quiet = await browser.get("/dashboard", params={"from": tomorrow, "to": tomorrow})
    assert "No follow-up is overdue with these filters." in quiet.text and 'id="table-overdue"' not in quiet.text
