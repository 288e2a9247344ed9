"""A real headless Chromium (Debian's `chromium` + `chromedriver`, JavaScript switched off) answers a
survey through an invitation link served by the app over a real HTTP port."""

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
from cxkit.dev_broker import free_port
from cxkit.testing import bearer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def live_server(cem_settings: CEMSettings, client: httpx.AsyncClient) -> Iterator[str]:
    """The app (its own instance, same database) served by uvicorn on a free port in a thread."""
    port = free_port()
    app: FastAPI = create_app(cem_settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{port}"}))
    with testing.live_server(app, port) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    # The page must work without JavaScript: switch it off. A phone's window.
    with testing.chromium(tmp_path / "chromium-profile", javascript=False, window="390,844") as driver:
        yield driver


def _answer_in_browser(driver: Any, url: str) -> dict[str, str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    seen = {"title": driver.title, "h1": driver.find_element(By.TAG_NAME, "h1").text}
    driver.find_element(By.CSS_SELECTOR, "label[for='q-nps-9']").click()
    assert driver.find_element(By.ID, "q-nps-9").is_selected()
    driver.find_element(By.CSS_SELECTOR, "label[for='q-reason-input']").click()  # the label focuses the box
    driver.switch_to.active_element.send_keys("Delivered before I expected")
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    WebDriverWait(driver, 15).until(ec.title_is("Thank you"))
    seen["thanks"] = driver.find_element(By.TAG_NAME, "main").text
    driver.get(url)
    seen["again"] = driver.find_element(By.TAG_NAME, "h1").text
    return seen


async def test_answering_an_invitation_in_a_real_browser(
    client: httpx.AsyncClient, live_server: str, browser: Any, make: Any, keys: dict[str, str]
) -> None:
    survey = await make.survey("nps", name="Checkout NPS", thank_you="Thanks, that helps us a lot.")
    customer = await make.customer()
    async with httpx.AsyncClient(base_url=live_server, headers=bearer(keys["write"])) as live:
        r = await live.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})
        assert r.status_code == 201, r.text
        invitation = r.json()
    assert invitation["url"] == f"{live_server}/r/{invitation['token']}"

    seen = await asyncio.to_thread(_answer_in_browser, browser, invitation["url"])

    assert seen["title"] == "Checkout NPS" and seen["h1"] == "Checkout NPS"
    assert "Thank you!" in seen["thanks"] and "Thanks, that helps us a lot." in seen["thanks"]
    assert seen["again"] == "Already answered"
    stored = (await client.get("/v1/responses", params={"survey_id": survey["id"]})).json()["items"]
    assert len(stored) == 1
    assert stored[0]["invitation_id"] == invitation["id"] and stored[0]["customer_id"] == str(customer)
    assert stored[0]["score"] == {"metric": "nps", "value": 9, "scale_min": 0, "scale_max": 10, "category": "promoter"}
    assert {a["question_id"]: a["value"] for a in stored[0]["answers"]}["reason"] == "Delivered before I expected"
    assert stored[0]["source"] == "web"


def _unsubscribe_in_browser(driver: Any, url: str) -> dict[str, str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    driver.find_element(By.CSS_SELECTOR, ".unsubscribe a").click()  # the survey page's link
    WebDriverWait(driver, 15).until(ec.title_is("No more surveys"))
    seen = {"ask": driver.find_element(By.TAG_NAME, "main").text}
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    WebDriverWait(driver, 15).until(ec.title_is("You are unsubscribed"))
    seen["done"] = driver.find_element(By.TAG_NAME, "main").text
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()  # unsubscribed by mistake
    WebDriverWait(driver, 15).until(ec.title_is("You are subscribed again"))
    seen["back"] = driver.find_element(By.TAG_NAME, "main").text
    return seen


async def test_unsubscribing_and_subscribing_again_in_a_real_browser(
    client: httpx.AsyncClient, live_server: str, browser: Any, make: Any, keys: dict[str, str], outbox: Any
) -> None:
    survey = await make.survey("nps")
    customer = await make.customer()
    async with httpx.AsyncClient(base_url=live_server, headers=bearer(keys["write"])) as live:
        r = await live.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})
        assert r.status_code == 201, r.text

    seen = await asyncio.to_thread(_unsubscribe_in_browser, browser, r.json()["url"])

    assert "We will send you no more surveys" in seen["ask"]
    assert "You will get no more surveys from us." in seen["done"] and "Unsubscribed by mistake?" in seen["done"]
    assert "We may send you surveys again." in seen["back"]
    assert [len(await outbox(kind)) for kind in ("survey.opted_out", "survey.opted_in")] == [1, 1]
    experience = (await client.get(f"/v1/customers/{customer}/experience")).json()
    assert experience["customer"]["survey_opt_out"] is False
