"""The CRM dashboard in a real headless Chromium over a real HTTP port: sign in through the form,
read the funnel chart back and compare it with `GET /v1/funnel`, lay the page out at 412 and 1280
CSS pixels (screenshots kept under var/test-artifacts/dashboard/), and run axe-core on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crm.config import CRMSettings
from crm.main import create_app
from cxkit import testing

from .test_dashboard import seed


@pytest.fixture
def live_server(crm_settings: CRMSettings, client: httpx.AsyncClient) -> Iterator[str]:
    app: FastAPI = create_app(crm_settings)
    with testing.live_server(app) as url:
        yield url


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    with testing.chromium(tmp_path / "chromium-profile", javascript=True) as d:
        yield d


def _visit(driver: Any, base: str, key: str, pipeline_id: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"{base}/dashboard")
    assert driver.current_url.startswith(f"{base}/dashboard/sign-in"), driver.current_url
    driver.find_element(By.ID, "api_key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: d.current_url == f"{base}/dashboard")  # the click returns before the page
    # Choose the pipeline in the form, as a person would.
    Select(driver.find_element(By.ID, "f-pipeline")).select_by_value(pipeline_id)
    driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: "pipeline_id=" in d.current_url)
    seen: dict[str, Any] = {
        "url": driver.current_url,
        "h1": driver.find_element(By.TAG_NAME, "h1").text,
    }
    seen["funnel"] = [
        (m.get_attribute("data-label"), m.get_attribute("data-value"))
        for m in driver.find_elements(By.CSS_SELECTOR, "#chart-funnel .bar")
    ]
    seen["forecast"] = driver.find_element(By.CSS_SELECTOR, "#tile-forecast .value").text
    seen["win_rate"] = driver.find_element(By.CSS_SELECTOR, "#tile-win-rate .value").text
    seen |= testing.at_phone_and_desktop(driver, "crm", "chart-funnel")
    return seen


async def test_dashboard_in_a_real_browser_at_phone_and_desktop_widths(
    client: httpx.AsyncClient,
    session_factory: Any,
    make: Any,
    cem: Any,
    apply_cem: Any,
    live_server: str,
    driver: Any,
    keys: dict[str, str],
) -> None:
    pipeline = await seed(client, session_factory, make, cem, apply_cem)
    await make.pipeline()  # a second one to choose from
    seen = await asyncio.to_thread(_visit, driver, live_server, keys["read"], pipeline["id"])

    funnel = (await client.get("/v1/funnel", params={"pipeline_id": pipeline["id"]})).json()
    assert seen["url"].endswith(f"/dashboard?pipeline_id={pipeline['id']}") and seen["h1"] == "Sales funnel"
    expected = [(s["name"], str(s["reached"])) for s in funnel["stages"]] + [("Won", str(funnel["won"]["count"]))]
    assert seen["funnel"] == expected and len(expected) == 5
    assert seen["forecast"] == f"{float(funnel['open']['weighted_amount']):,.2f}"
    assert seen["win_rate"] == f"{100 * funnel['win_rate']:.1f}%"
    testing.assert_laid_out(seen)
