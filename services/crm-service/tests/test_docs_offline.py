"""Issue 11: `/docs` and `/redoc` work on a machine without internet: their JavaScript and CSS
come from the service (the pinned fastapi-offline package), and a headless Chromium that can
reach nothing but loopback shows every operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crm.config import CRMSettings
from crm.main import create_app
from cxkit import testing


@pytest.fixture
def live_url(crm_settings: CRMSettings) -> Iterator[str]:
    app: FastAPI = create_app(crm_settings)
    with testing.live_server(app) as url:
        yield url


async def test_docs_pages_load_their_assets_from_the_service_and_list_every_operation(live_url: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=live_url) as client:
        schema = (await client.get("/openapi.json")).json()
        pages = {path: (await client.get(path)).text for path in ("/docs", "/redoc")}
    for html in pages.values():
        assert "cdn." not in html and "googleapis" not in html and "/docs-assets/" in html
    operations = sum(
        1 for item in schema["paths"].values() for method in item if method in {"get", "post", "put", "patch", "delete"}
    )

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with testing.chromium(tmp_path / "profile", offline=True) as driver:
        driver.get(f"{live_url}/docs")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
        shown = driver.find_elements(By.CSS_SELECTOR, ".opblock")
        assert len(shown) == operations
        # What an operator sees with no network: kept as a test artefact (git-ignored).
        shot = testing.DASHBOARD_ARTIFACTS.parent / "docs" / "crm-docs-offline.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        driver.get(f"{live_url}/redoc")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']"))
        listed: Any = driver.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']")
        assert len(listed) == operations
        # No script, style sheet or data came from outside (the offline proxy refuses it); ReDoc's
        # own "powered by" logo is the only outside address it names, an image it can do without.
        outside = driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => !e.name.startsWith(arguments[0])).map(e => [e.initiatorType, e.name])",
            live_url,
        )
        assert [kind for kind, _ in outside if kind != "img"] == [], outside
