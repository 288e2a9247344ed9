"""Calls from browser pages of other origins (CORS): off by default; with `CORS_ALLOW_ORIGINS`
the preflight is answered before authentication, and every answer to an allowed origin
carries the CORS headers, problems and the body cap's 413 included, with the headers a page
needs (ETag, Location, RateLimit, ...) exposed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Response
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from pydantic import ValidationError

from cxkit import tracing
from cxkit.http.app import install_platform
from cxkit.http.cors import EXPOSED_HEADERS
from cxkit.http.problems import Unauthorized
from cxkit.logs import request_id_var
from cxkit.settings import ServiceSettings

APP = "https://app.example.com"


def kit_app(**settings: object) -> FastAPI:
    router = APIRouter()

    @router.get("/v1/things/1")
    async def read(response: Response) -> dict[str, int]:
        response.headers["ETag"] = '"3"'
        return {"id": 1}

    @router.post("/v1/things")
    async def write() -> dict[str, int]:
        return {"id": 2}

    @router.get("/v1/secret")
    async def secret() -> None:
        raise Unauthorized("missing or unknown API key")

    @router.get("/v1/crash")
    async def crash() -> None:
        raise RuntimeError("a bug")

    app = FastAPI(docs_url=None, redoc_url=None)
    app.state.settings = ServiceSettings(**settings)  # type: ignore[arg-type]
    install_platform(app, "kit-test")
    app.include_router(router)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = kit_app(cors_allow_origins=[APP, "http://localhost:5173"], max_body_bytes=1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as c:
        yield c


async def test_a_preflight_from_an_allowed_origin_is_answered_without_a_key(client: httpx.AsyncClient) -> None:
    asked = {"Origin": APP, "Access-Control-Request-Method": "POST"}
    r = await client.options("/v1/things", headers=asked | {"Access-Control-Request-Headers": "authorization, idempotency-key"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert {"POST", "PATCH", "DELETE"} <= set(r.headers["access-control-allow-methods"].split(", "))
    assert {"authorization", "idempotency-key", "if-match"} <= set(r.headers["access-control-allow-headers"].lower().split(", "))
    assert r.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in r.headers  # the key travels in Authorization, never a cookie

    elsewhere = await client.options("/v1/things", headers=asked | {"Origin": "https://evil.example"})
    assert elsewhere.status_code == 400 and "access-control-allow-origin" not in elsewhere.headers


async def test_every_answer_to_an_allowed_origin_carries_the_headers_a_page_reads(client: httpx.AsyncClient) -> None:
    read = await client.get("/v1/things/1", headers={"Origin": "http://localhost:5173"})
    assert read.status_code == 200 and read.headers["etag"] == '"3"'
    assert read.headers["access-control-allow-origin"] == "http://localhost:5173"
    exposed = {h.strip().lower() for h in read.headers["access-control-expose-headers"].split(",")}
    assert exposed == {h.lower() for h in EXPOSED_HEADERS}
    assert "origin" in read.headers["vary"].lower()

    problem = await client.get("/v1/secret", headers={"Origin": APP})
    assert problem.status_code == 401 and problem.headers["access-control-allow-origin"] == APP
    too_large = await client.post("/v1/things", content=b"{" + b" " * 2000 + b"}", headers={"Origin": APP})
    assert too_large.status_code == 413 and too_large.headers["access-control-allow-origin"] == APP

    other = await client.get("/v1/things/1", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers  # the browser hides it
    server = await client.get("/v1/things/1")  # no Origin: a server calling, nothing added
    assert not [h for h in server.headers if h.startswith("access-control-")]


class _LinesWithRequestIds(logging.Handler):
    """Error lines, each with the request id it was logged under."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[tuple[logging.LogRecord, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record, request_id_var.get()))


async def test_a_crash_answers_500_with_the_headers_of_any_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unhandled exception's 500 goes out through the same middleware as every other answer:
    a page of an allowed origin can read it, and its request id and trace match its log line."""
    monkeypatch.setattr(tracing._state, "provider", TracerProvider(sampler=ALWAYS_OFF))
    app = kit_app(cors_allow_origins=[APP])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    sent = {"Origin": APP, "X-Request-ID": "crash-42", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    lines = _LinesWithRequestIds()
    logging.getLogger().addHandler(lines)
    # raise_app_exceptions=False: the answer as a server would send it, whatever reaches the server.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as client:
            crashed = await client.get("/v1/crash", headers=sent)
            after = await client.get("/v1/things/1", headers=sent)
    finally:
        logging.getLogger().removeHandler(lines)

    assert crashed.status_code == 500 and crashed.headers["content-type"] == "application/problem+json"
    assert crashed.json()["type"].endswith("/internal") and "a bug" not in crashed.text
    assert crashed.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in crashed.headers["access-control-expose-headers"].lower()
    assert crashed.headers["x-request-id"] == "crash-42"
    assert crashed.headers["traceparent"].split("-")[1] == trace_id
    [(line, request_id)] = [(r, rid) for r, rid in lines.lines if r.getMessage() == "unhandled error"]
    assert request_id == "crash-42" and line.exc_info is not None and isinstance(line.exc_info[1], RuntimeError)
    assert after.status_code == 200  # the app goes on


async def test_by_default_no_origin_is_allowed() -> None:
    app = kit_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        read = await client.get("/v1/things/1", headers={"Origin": APP})
        preflight = await client.options("/v1/things", headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers
    assert "access-control-allow-origin" not in preflight.headers


def test_origins_are_kept_as_browsers_send_them_and_anything_else_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", '["https://App.Example.com/", "https://shop.example:443", "http://[::1]:8080"]')
    assert ServiceSettings().cors_allow_origins == ["https://app.example.com", "https://shop.example", "http://[::1]:8080"]
    assert ServiceSettings(cors_allow_origins=["*"]).cors_allow_origins == ["*"]
    for bad in ["app.example.com", "https://app.example.com/path", "ftp://app.example.com", "https://u@app.example.com"]:
        with pytest.raises(ValidationError, match="not an origin like"):
            ServiceSettings(cors_allow_origins=[bad])
