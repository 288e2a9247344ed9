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


@pytest.fixture
def checking_browser(tmp_path: Path) -> Iterator[Any]:
    """JavaScript on, for the checks only: axe-core runs in the page (the pages use none)."""
    with testing.chromium(tmp_path / "chromium-profile", javascript=True) as driver:
        yield driver


def _every_respondent_page(driver: Any, url: str, unknown_url: str) -> dict[str, dict[str, Any]]:
    """Each page a respondent can meet, laid out as a 390 px phone and a 1280 px desktop in the
    light color scheme, and as the phone in the dark one (the pages follow the system's): how wide
    the document is (a page that fits is no wider than the window) and axe's serious and critical
    violations (contrast among them)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    seen: dict[str, dict[str, Any]] = {}

    def check(name: str, title: str) -> None:
        WebDriverWait(driver, 15).until(ec.title_is(title))
        seen[name] = {}
        for width, mobile, scheme in ((390, True, "light"), (1280, False, "light"), (390, True, "dark")):
            testing.color_scheme(driver, scheme)
            inner = testing.at_width(driver, width, mobile=mobile)
            scroll = driver.execute_script("return document.documentElement.scrollWidth")
            seen[name][f"{width} {scheme}"] = {"fits": inner == width and scroll <= width, "axe": testing.axe_serious(driver)}

    def submit() -> None:
        driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()

    driver.get(url)
    check("survey", "Checkout NPS")
    driver.execute_script("document.querySelector('form').noValidate = true")  # past the browser's own check
    submit()
    check("survey with errors", "Error: Checkout NPS")  # the title says so first
    assert driver.find_elements(By.CSS_SELECTOR, "[aria-invalid='true']"), "the errors are not marked"
    driver.find_element(By.CSS_SELECTOR, "label[for='q-nps-3']").click()
    submit()
    check("thanks", "Thank you")
    driver.get(url)
    check("answered", "Already answered")
    driver.get(url + "/unsubscribe")
    check("unsubscribe", "No more surveys")
    submit()
    check("unsubscribed", "You are unsubscribed")
    submit()
    check("subscribed again", "You are subscribed again")
    driver.get(unknown_url)
    check("unknown link", "Link not found")
    return seen


async def test_every_respondent_page_fits_a_phone_and_a_desktop_and_axe_finds_nothing_serious(
    live_server: str, checking_browser: Any, make: Any, keys: dict[str, str]
) -> None:
    survey = await make.survey("nps", name="Checkout NPS")
    customer = await make.customer()
    async with httpx.AsyncClient(base_url=live_server, headers=bearer(keys["write"])) as live:
        r = await live.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(customer)})
        assert r.status_code == 201, r.text

    seen = await asyncio.to_thread(_every_respondent_page, checking_browser, r.json()["url"], f"{live_server}/r/no-such-link")

    assert len(seen) == 8
    wrong = {(page, width): found for page, widths in seen.items() for width, found in widths.items()}
    assert {k: v for k, v in wrong.items() if v != {"fits": True, "axe": []}} == {}


def _focus_ring_contrast(driver: Any, url: str) -> dict[str, float]:
    """Per color scheme, the contrast between the keyboard focus ring of a score and the page
    behind it (WCAG 1.4.11 asks 3:1 of such a ring; axe does not check it)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    found = {}
    for scheme in ("light", "dark"):
        testing.color_scheme(driver, scheme)
        driver.get(url)
        first = driver.find_element(By.CSS_SELECTOR, ".scale input")
        driver.execute_script("arguments[0].scrollIntoView()", first)
        while driver.switch_to.active_element != first:  # by keyboard, as focus-visible wants
            ActionChains(driver).send_keys(Keys.TAB).perform()
        ring, page = driver.execute_script(
            "const label = document.querySelector(`label[for='${document.activeElement.id}']`);"
            "return [getComputedStyle(label).outlineColor, getComputedStyle(document.body).backgroundColor];"
        )
        found[scheme] = testing.contrast(ring, page)
    return found


async def test_the_keyboard_focus_ring_stands_out_from_the_page_in_both_color_schemes(
    live_server: str, checking_browser: Any, make: Any, keys: dict[str, str]
) -> None:
    survey = await make.survey("nps")
    async with httpx.AsyncClient(base_url=live_server, headers=bearer(keys["write"])) as live:
        r = await live.post(f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": str(await make.customer())})
        assert r.status_code == 201, r.text

    contrast = await asyncio.to_thread(_focus_ring_contrast, checking_browser, r.json()["url"])

    assert contrast["light"] >= 3 and contrast["dark"] >= 3, contrast
