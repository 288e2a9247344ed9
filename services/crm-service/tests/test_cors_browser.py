"""A frontend served from another origin calls the CRM from a real headless Chromium: with
`CRM_CORS_ALLOW_ORIGINS` naming the page's origin, its `fetch` reads a customer and its ETag,
and creates one with an Idempotency-Key (a preflighted request) and reads the Location; with
the default settings the browser refuses the same calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from crm.config import CRMSettings
from crm.main import create_app
from cxkit import testing

# What the page runs: a read, then a write that needs a preflight (JSON, Authorization,
# Idempotency-Key); it reports what the browser let the page see.
CALLS = """
const [api, key, id, done] = arguments;
const seen = {};
try {
  const read = await fetch(`${api}/v1/customers/${id}`, {headers: {Authorization: `Bearer ${key}`}});
  seen.read = {status: read.status, etag: read.headers.get("ETag"), email: (await read.json()).email};
  const made = await fetch(`${api}/v1/customers`, {
    method: "POST",
    headers: {Authorization: `Bearer ${key}`, "Content-Type": "application/json", "Idempotency-Key": "cors-1"},
    body: JSON.stringify({email: "from-the-browser@example.com", name: "Browser Made"}),
  });
  seen.write = {status: made.status, location: made.headers.get("Location"), limit: made.headers.get("RateLimit")};
} catch (error) {
  seen.error = String(error);
}
done(seen);
"""


def page_origin() -> Starlette:
    async def page(_: Any) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>frontend</title><p>a frontend of another origin</p>")

    return Starlette(routes=[Route("/", page)])


@pytest.fixture
def frontend() -> Iterator[str]:
    with testing.live_server(page_origin()) as url:
        yield url


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    with testing.chromium(tmp_path / "chromium-profile", javascript=True) as d:
        yield d


def _calls(driver: Any, frontend: str, api: str, key: str, customer_id: str) -> dict[str, Any]:
    driver.get(frontend)
    driver.set_script_timeout(15)
    seen: dict[str, Any] = driver.execute_async_script(CALLS, api, key, customer_id)
    return seen


async def test_a_page_of_an_allowed_origin_reads_and_writes_and_others_are_refused(
    crm_settings: CRMSettings, client: httpx.AsyncClient, make: Any, keys: dict[str, str], frontend: str, driver: Any
) -> None:
    customer = await make.customer(email="cors@example.com")
    allowed = crm_settings.model_copy(update={"cors_allow_origins": [frontend]})
    with testing.live_server(create_app(allowed)) as api:
        seen = await asyncio.to_thread(_calls, driver, frontend, api, keys["write"], customer["id"])
    assert "error" not in seen, seen
    assert seen["read"] == {"status": 200, "etag": '"1"', "email": "cors@example.com"}
    assert seen["write"]["status"] == 201 and seen["write"]["location"].startswith("/v1/customers/")
    assert seen["write"]["limit"]  # the rate-limit fields are readable too

    with testing.live_server(create_app(crm_settings)) as api:  # as shipped: no origin allowed
        refused = await asyncio.to_thread(_calls, driver, frontend, api, keys["write"], customer["id"])
    assert refused == {"error": "TypeError: Failed to fetch"}
