"""The CRM dashboard over HTTP (no browser): sign-in, the session cookie refused by the JSON API,
the empty state, and the funnel chart and figures holding what `GET /v1/funnel` gives. (The
sign-in machinery is the kit's; cem-service's test_dashboard.py covers its refusals in full.)"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cxkit.dashboard.sessions import COOKIE
from cxkit.http.ratelimit import RateLimits
from cxkit.testing import bearer, chart_values, dashboard_sign_in, form_token

from .test_funnel import _build_fixture


@pytest.fixture
async def browser(crm_app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client without an API key that keeps cookies, as a browser does."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=crm_app), base_url="http://crm") as c:
        yield c


async def seed(client: httpx.AsyncClient, session_factory: Any, make: Any, cem: Any, apply_cem: Any) -> dict[str, Any]:
    """The funnel test's hand-worked deals, and a few answers and feedback from the CEM."""
    pipeline = await _build_fixture(client, session_factory, make)
    customer = uuid.UUID((await make.customer())["id"])
    now = dt.datetime.now(dt.UTC)
    await apply_cem(
        cem.invited(customer, at=now),
        cem.response(customer, 10, at=now),
        cem.response(customer, 9, at=now),
        cem.response(customer, 3, at=now),
        cem.response(customer, 5, "csat", at=now),
        cem.response(customer, 2, "csat", at=now),
        cem.response(customer, 6, "ces", at=now),
        cem.feedback(customer, "Late again", at=now, sentiment_label="negative", sentiment_score=-0.4),
        cem.followup(customer, 3, at=now),
    )
    return pipeline


async def test_sign_in_then_sign_out(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    assert (await browser.get("/dashboard")).status_code == 303
    assert (await dashboard_sign_in(browser, "cx_wrong")).status_code == 401
    r = await dashboard_sign_in(browser, keys["read"])
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    page = await browser.get("/dashboard")
    assert page.status_code == 200 and "<script" not in page.text
    assert (await browser.post("/dashboard/sign-out", data={"form_token": "forged"})).status_code == 403
    r = await browser.post("/dashboard/sign-out", data={"form_token": form_token(page.text)})
    assert r.status_code == 303
    assert (await browser.get("/dashboard")).status_code == 303


@pytest.fixture
def four_a_minute(crm_app: FastAPI) -> Iterator[None]:
    """The app's per-key limit at 4 requests a minute, fresh counts (the app's own limits after)."""
    kept = crm_app.state.rate_limits
    crm_app.state.rate_limits = RateLimits(per_key="4/minute", failed_auth="100/minute")
    yield
    crm_app.state.rate_limits = kept


@pytest.mark.usefixtures("four_a_minute")
async def test_dashboard_pages_count_against_the_keys_rate_limit_and_answer_429_past_it(
    browser: httpx.AsyncClient, crm_app: FastAPI, keys: dict[str, str]
) -> None:
    """A signed-in page is a use of the key like a Bearer request: it counts against the key's
    limit, shared with the API, and past it the page (its queries are heavy) is refused with a
    429 page saying when to come back."""
    assert (await dashboard_sign_in(browser, keys["read"])).status_code == 303  # 1
    page = await browser.get("/dashboard")  # 2
    assert page.status_code == 200 and page.headers["ratelimit"].startswith('"key";r=2;')
    api = await browser.get("/v1/customers?limit=1", headers=bearer(keys["read"]))  # 3
    assert api.status_code == 200 and api.headers["ratelimit"].startswith('"key";r=1;')
    assert (await browser.get("/dashboard")).status_code == 200  # 4

    limited = await browser.get("/dashboard")
    assert limited.status_code == 429, limited.status_code
    assert limited.headers["content-type"].startswith("text/html") and limited.headers["cache-control"] == "no-store"
    assert 1 <= int(limited.headers["retry-after"]) <= 60 and limited.headers["ratelimit"].startswith('"key";r=0;')
    assert "Too many requests" in limited.text and "more than 4 requests in 60 s" in limited.text
    assert "No deals in" not in limited.text  # the page itself was not built
    assert (await browser.get("/v1/customers?limit=1", headers=bearer(keys["read"]))).status_code == 429
    # Another key has its own count.
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=crm_app), base_url="http://crm")
    async with other:
        assert (await dashboard_sign_in(other, keys["admin"])).status_code == 303
        assert (await other.get("/dashboard")).status_code == 200
        refused = await dashboard_sign_in(browser, keys["read"])  # signing in again is a use of the key too
        assert refused.status_code == 429 and "retry-after" in refused.headers


async def test_the_session_cookie_does_not_authenticate_the_json_api(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    session = (await dashboard_sign_in(browser, keys["admin"])).cookies[COOKIE]
    for path in ("/v1/funnel", "/v1/customers", "/v1/pipelines"):
        answer = await browser.get(path, headers={"Cookie": f"{COOKIE}={session}"})
        assert answer.status_code == 401, path
    write = await browser.post("/v1/customers", json={"email": "a@example.com"}, headers={"Cookie": f"{COOKIE}={session}"})
    assert write.status_code == 401


async def test_empty_state_says_how_to_add_a_deal(browser: httpx.AsyncClient, keys: dict[str, str]) -> None:
    await dashboard_sign_in(browser, keys["read"])
    page = await browser.get("/dashboard")
    assert page.status_code == 200
    assert "No deals in" in page.text and "curl -X POST http://crm/v1/deals" in page.text and "make demo" in page.text
    assert chart_values(page.text, "chart-funnel") == []


async def test_funnel_chart_and_figures_match_the_json_api(
    client: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    session_factory: Any,
    make: Any,
    cem: Any,
    apply_cem: Any,
    keys: dict[str, str],
) -> None:
    pipeline = await seed(client, session_factory, make, cem, apply_cem)
    funnel = (await client.get("/v1/funnel", params={"pipeline_id": pipeline["id"]})).json()
    await dashboard_sign_in(browser, keys["read"])
    page = await browser.get("/dashboard", params={"pipeline_id": pipeline["id"]})
    assert page.status_code == 200

    expected = [(s["name"], s["reached"]) for s in funnel["stages"]] + [("Won", funnel["won"]["count"])]
    assert [(b["label"], int(b["value"])) for b in chart_values(page.text, "chart-funnel")] == expected
    days = [float(b["value"]) for b in chart_values(page.text, "chart-days")]
    assert days == [s["avg_days_in_stage"] for s in funnel["stages"]] == [2.5, 3.5, 3.0, 7.0]
    assert f"{float(funnel['open']['weighted_amount']):,.2f}" in page.text  # the weighted forecast
    assert f"{100 * funnel['win_rate']:.1f}%" in page.text
    for s in funnel["stages"]:
        if s["conversion_to_next"] is not None:
            assert f"{100 * s['conversion_to_next']:.1f}%" in page.text
    # The experience beside it: 2 promoters, 1 detractor of 3 -> NPS 33.3; CSAT 1 of 2 satisfied.
    mix = [int(b["value"]) for b in chart_values(page.text, "chart-nps-mix")]
    assert mix == [2, 0, 1]
    assert "33.3" in page.text and "50.0" in page.text
    # The forecast beside it holds what GET /v1/forecast gives for the next six months.
    open_deal = next(
        d
        for d in (await client.get("/v1/deals", params={"pipeline_id": pipeline["id"], "status": "open"})).json()["items"]
        if d["amount"]
    )
    today = dt.datetime.now(dt.UTC).date()
    assert (
        await client.patch(f"/v1/deals/{open_deal['id']}", json={"expected_close_date": today.isoformat()})
    ).status_code == 200
    forecast = (await client.get("/v1/forecast", params={"pipeline_id": pipeline["id"]})).json()
    page = await browser.get("/dashboard", params={"pipeline_id": pipeline["id"]})
    bars = chart_values(page.text, "chart-forecast")
    assert [float(b["value"]) for b in bars] == [float(p["expected"]["weighted_amount"]) for p in forecast["periods"]]
    assert len(bars) == 6 and float(bars[0]["value"]) > 0
    assert bars[0]["label"] == today.strftime("%b %Y")
    # Another pipeline (no deals) shows its empty state; an unknown one says so.
    other = await make.pipeline()
    assert "No deals in" in (await browser.get("/dashboard", params={"pipeline_id": other["id"]})).text
    missing = await browser.get("/dashboard", params={"pipeline_id": str(uuid.uuid4())})
    assert missing.status_code == 404 and "does not exist" in missing.text
    assert (await browser.get("/dashboard", params={"pipeline_id": "x"})).status_code == 422
