"""The CEM dashboard in a real headless Chromium over a real HTTP port: sign in through the form,
read the charts back and compare them with the JSON API, lay the page out at 412 and 1280 CSS
pixels (screenshots kept under var/test-artifacts/dashboard/), and run axe-core on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cem.config import CEMSettings
from cem.main import create_app
from cxkit import testing

from .test_dashboard import _points, _seed


@pytest.fixture
def live_server(cem_settings: CEMSettings, client: httpx.AsyncClient) -> Iterator[str]:
    app: FastAPI = create_app(cem_settings)
    with testing.live_server(app) as url:
        yield url


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    with testing.chromium(tmp_path / "chromium-profile", javascript=True) as d:
        yield d


def _visit(driver: Any, base: str, key: str, survey_id: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"{base}/dashboard")
    assert driver.current_url.startswith(f"{base}/dashboard/sign-in"), driver.current_url
    driver.find_element(By.ID, "api_key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: d.current_url == f"{base}/dashboard")  # the click returns before the page
    seen: dict[str, Any] = {"h1": driver.find_element(By.TAG_NAME, "h1").text, "charts": {}}
    for chart in ("nps", "csat", "ces", "gap", "recovery", "suppressions", "response"):
        marks = driver.find_elements(By.CSS_SELECTOR, f"#chart-{chart} .point, #chart-{chart} .bar")
        seen["charts"][chart] = [
            {k: m.get_attribute(f"data-{k}") for k in ("label", "value", "n", "low", "high") if m.get_attribute(f"data-{k}")}
            for m in marks
        ]
    seen["feedback"] = [q.text for q in driver.find_elements(By.CSS_SELECTOR, "#feedback q")]
    # Open the data tables (closed <details> by default), so axe checks them too.
    driver.execute_script("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    seen |= testing.at_phone_and_desktop(driver, "cem", "chart-nps")
    # One survey selected: its results question by question too.
    driver.get(f"{base}/dashboard?survey_id={survey_id}")
    seen["survey_h2"] = driver.find_element(By.ID, "h-results").text
    driver.execute_script("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    seen["survey"] = testing.at_phone_and_desktop(driver, "cem-survey", "chart-q-nps")
    return seen


async def test_dashboard_in_a_real_browser_at_phone_and_desktop_widths(
    client: httpx.AsyncClient, make: Any, live_server: str, driver: Any, keys: dict[str, str]
) -> None:
    surveys = await _seed(client, make)
    seen = await asyncio.to_thread(_visit, driver, live_server, keys["read"], surveys["nps"]["id"])

    assert seen["h1"] == "Customer experience"
    for metric in ("nps", "csat", "ces"):
        expected = _points((await client.get(f"/v1/analytics/{metric}")).json())
        assert len(expected) >= 2 and seen["charts"][metric] == expected, metric
    touchpoints = (await client.get("/v1/analytics/touchpoints")).json()["items"]
    assert [float(b["value"]) for b in seen["charts"]["gap"]] == [t["gap"] for t in touchpoints if t["target"]]
    assert len(seen["charts"]["suppressions"]) == 4 and len(seen["charts"]["recovery"]) == 4
    assert seen["survey_h2"] == "Checkout NPS: question by question"
    negative = (await client.get("/v1/feedback", params={"sentiment": "negative"})).json()["items"]
    assert len(negative) == 2 and seen["feedback"] == [f["text"] for f in negative]
    for page in (seen, seen["survey"]):
        testing.assert_laid_out(page)
