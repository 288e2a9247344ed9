"""Pure pieces of the HTTP kit: cursors, ETags, trace context, event decoding, the merged-away answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import REGISTRY
from pydantic import ValidationError

from cxkit.events import InvalidEvent, decode_event, encode_event, new_event
from cxkit.events.payloads import CustomerCreated
from cxkit.fields import InputModel
from cxkit.http.app import install_platform
from cxkit.http.auth import Principal
from cxkit.http.batch import BatchBody, InvalidItem, each_item
from cxkit.http.csv_export import CsvExport
from cxkit.http.etag import check_if_match, etag_for
from cxkit.http.pagination import decode_cursor, encode_cursor
from cxkit.http.problems import (
    MERGED_AWAY_RESPONSE,
    MergedAway,
    PreconditionFailed,
    Unprocessable,
    document_problems_as_problem_json,
    install_problem_handlers,
    only_these_methods,
    problem_responses,
)


def test_cursor_round_trips_and_garbage_is_422() -> None:
    values = ["2026-11-23T10:00:00+00:00", str(uuid.uuid4()), 3]
    assert decode_cursor(encode_cursor(values)) == values
    for bad in ["%%%", "bm90IGpzb24", encode_cursor([1])[:-3] + "!!", "eyJhIjoxfQ"]:
        with pytest.raises(Unprocessable):
            decode_cursor(bad)


def test_if_match_accepts_current_weak_and_star_and_refuses_stale() -> None:
    check_if_match(None, 3)
    check_if_match('"3"', 3)
    check_if_match('W/"3"', 3)
    check_if_match('"1", "3"', 3)
    check_if_match("*", 3)
    with pytest.raises(PreconditionFailed) as info:
        check_if_match('"2"', 3)
    assert info.value.headers == {"ETag": etag_for(3)}


class _Item(InputModel):
    name: str
    extra: dict[str, object] = {}


class _Batch(BatchBody):
    items: list[each_item(_Item)]  # type: ignore[valid-type]
    note: str | None = None


def test_a_nul_in_a_batch_item_is_that_items_error_and_elsewhere_the_bodys() -> None:
    batch = _Batch.model_validate({"items": [{"name": "a", "extra": {"k": ["\x00"]}}, {"name": "b"}, {"name": "c\x00"}]})
    first, second, third = batch.items
    assert isinstance(first, InvalidItem) and [e["loc"] for e in first.errors] == [["extra", "k", 0]]
    assert isinstance(second, _Item) and second.name == "b"
    assert isinstance(third, InvalidItem) and [e["loc"] for e in third.errors] == [["name"]]
    for body in ({"items": [{"name": "a"}], "note": "n\x00"}, {"items": "\x00"}):
        with pytest.raises(ValidationError, match="NUL"):
            _Batch.model_validate(body)


def test_scopes_are_ordered_admin_write_read() -> None:
    admin = Principal(uuid.uuid4(), "a", frozenset({"admin"}))
    reader = Principal(uuid.uuid4(), "r", frozenset({"read"}))
    assert admin.has("read") and admin.has("write") and admin.has("admin")
    assert reader.has("read") and not reader.has("write")


def test_decode_event_explains_what_is_wrong() -> None:
    cid = uuid.uuid4()
    good = encode_event(new_event("customer.created", source="s", subject=str(cid), data=CustomerCreated(id=cid)))
    event, payload = decode_event(good)
    assert event.type == "customer.created" and payload.id == cid
    cases = {
        None: "empty message value",
        b"[1]": "not a JSON object",
        b"\xff": "not JSON",
        orjson.dumps({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}): "not a CloudEvent",
        orjson.dumps(
            {"specversion": "1.0", "id": "1", "source": "s", "type": "customer.created", "data": {}}
        ): "invalid customer.created data",
    }
    for raw, reason in cases.items():
        with pytest.raises(InvalidEvent) as info:
            decode_event(raw)
        assert info.value.reason.startswith(reason), info.value.reason


async def test_a_merged_duplicate_is_redirected_to_the_same_path_on_its_survivor() -> None:
    duplicate, survivor = uuid.uuid4(), uuid.uuid4()
    router = APIRouter()

    @router.get("/v1/customers/{customer_id}/view", responses=MERGED_AWAY_RESPONSE)
    async def view(customer_id: uuid.UUID) -> None:
        raise MergedAway(customer_id, survivor)

    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        r = await client.get(f"/v1/customers/{duplicate}/view", params={"limit": 5})
    assert r.status_code == 308 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["location"] == f"/v1/customers/{survivor}/view?limit=5"
    assert r.json() == {
        "type": "https://cx.example.org/problems/merged",
        "title": "Merged into another customer",
        "status": 308,
        "detail": f"customer {duplicate} was merged into {survivor}",
        "instance": f"/v1/customers/{duplicate}/view",
        "merged_into": str(survivor),
    }
    documented = app.openapi()["paths"]["/v1/customers/{customer_id}/view"]["get"]["responses"]["308"]
    assert "application/problem+json" in documented["content"]
    assert {"$ref": "#/components/schemas/MergedAwayProblem"} in [media.get("schema") for media in documented["content"].values()]


def test_problem_answers_are_documented_under_problem_json_only() -> None:
    """The schema of a documented problem sits under application/problem+json, the media type it
    is sent with, and not under the route's own (application/json, text/csv on an export)."""
    router = APIRouter()

    @router.get("/v1/things/{thing_id}", responses={**problem_responses(404), **MERGED_AWAY_RESPONSE})
    async def thing(thing_id: uuid.UUID) -> dict[str, str]:
        return {"id": str(thing_id)}

    @router.get("/v1/things/export", response_class=PlainTextResponse, responses=problem_responses(422))
    async def export() -> str:
        return "id\n"

    app = FastAPI(docs_url=None, redoc_url=None)
    install_platform(app, "kit-test")
    app.include_router(router)
    paths = app.openapi()["paths"]
    answers = {**paths["/v1/things/{thing_id}"]["get"]["responses"], **paths["/v1/things/export"]["get"]["responses"]}
    for status in ("404", "308", "422", "503"):
        assert list(answers[status]["content"]) == ["application/problem+json"], status
    assert answers["404"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert answers["308"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/MergedAwayProblem"}
    assert list(paths["/v1/things/{thing_id}"]["get"]["responses"]["200"]["content"]) == ["application/json"]


async def test_validation_answers_are_documented_as_sent_and_only_where_input_can_be_invalid() -> None:
    """FastAPI documents a 422 `HTTPValidationError` (application/json) on every route with an
    input; the kit answers invalid input as a problem, and text path parameters cannot be
    invalid at all."""
    router = APIRouter()

    @router.get("/things/{thing_id}")  # a uuid: can be invalid
    async def thing(thing_id: uuid.UUID) -> dict[str, str]:
        return {"id": str(thing_id)}

    @router.get("/pages/{name}")  # any text will do
    async def page(name: str) -> dict[str, str]:
        return {"name": name}

    app = FastAPI(docs_url=None, redoc_url=None)
    install_platform(app, "kit-test")
    app.include_router(router)
    document = app.openapi()
    paths = document["paths"]
    invalid = paths["/things/{thing_id}"]["get"]["responses"]["422"]
    assert list(invalid["content"]) == ["application/problem+json"]
    assert invalid["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "FieldProblem" in document["components"]["schemas"]  # what Problem's `errors` refer to
    assert "422" not in paths["/pages/{name}"]["get"]["responses"]
    assert "422" not in paths["/schemas/events/{event_type}.json"]["get"]["responses"]
    assert list(paths["/schemas/events/{event_type}.json"]["get"]["responses"]["404"]["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in str(document)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        answer = await client.get("/things/not-a-uuid")
        assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["loc"] == ["path", "thing_id"]
        missing = await client.get("/schemas/events/no.such.json")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"

    bare = FastAPI(docs_url=None, redoc_url=None)  # no route documents a problem: the schema is added
    document_problems_as_problem_json(bare)
    bare.include_router(router)
    schemas = bare.openapi()["components"]["schemas"]
    assert set(schemas) == {"Problem", "FieldProblem"}
    assert schemas["Problem"]["properties"]["errors"]["anyOf"][0]["items"] == {"$ref": "#/components/schemas/FieldProblem"}


async def test_head_is_answered_as_get_without_the_body_wherever_get_is() -> None:
    """RFC 9110 9.3.2: HEAD is GET without the body, on every GET route (the ops routes, a
    resource, an export beside an id template); a path without GET still refuses it, and a 405
    names only methods that work there (not those the export's catch-all route refuses)."""
    router = APIRouter()
    only_these_methods(router, "/v1/things/export")

    @router.get("/v1/things/export", response_class=PlainTextResponse)
    async def export() -> str:
        return "id\n1\n"

    @router.get("/v1/things/{thing_id}")
    async def thing(thing_id: uuid.UUID, response: Response) -> dict[str, str]:
        response.headers["ETag"] = '"7"'
        return {"id": str(thing_id)}

    @router.patch("/v1/things/{thing_id}")
    async def change(thing_id: uuid.UUID) -> dict[str, str]:
        return {"id": str(thing_id)}

    @router.post("/v1/things")
    async def create() -> dict[str, str]:
        return {"id": "new"}

    app = FastAPI(docs_url=None, redoc_url=None)
    install_platform(app, "kit-test")
    app.include_router(router)
    thing_id = uuid.uuid4()
    counted = {"method": "HEAD", "route": "/v1/things/{thing_id}", "status": "200"}
    before = REGISTRY.get_sample_value("http_requests_total", counted) or 0.0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        for path in ("/health", f"/v1/things/{thing_id}", "/v1/things/export", "/openapi.json"):
            got, head = await client.get(path), await client.head(path, headers={"X-Request-ID": "head-1"})
            assert got.status_code == 200 and head.status_code == 200, (path, head.status_code, head.text)
            assert head.content == b"" and head.headers["x-request-id"] == "head-1", path
            for name in ("content-type", "content-length", "etag"):
                assert head.headers.get(name) == got.headers.get(name), (path, name)
        assert (await client.head(f"/v1/things/{thing_id}")).headers["etag"] == '"7"'
        assert (await client.head("/v1/things/not-a-uuid")).status_code == 422
        assert (await client.head("/v1/nowhere")).status_code == 404

        no_get = await client.head("/v1/things")
        assert no_get.status_code == 405 and no_get.headers["allow"] == "POST"
        for method in ("PUT", "QUERY", "FOO"):
            refused = await client.request(method, "/v1/things/export")
            assert refused.status_code == 405 and refused.headers["allow"] == "GET", (method, refused.headers)
            assert refused.headers["content-type"] == "application/problem+json"
        other = await client.request("FOO", f"/v1/things/{thing_id}")
        assert other.status_code == 405 and other.headers["allow"] == "GET, PATCH"
    assert REGISTRY.get_sample_value("http_requests_total", counted) == before + 2  # counted as HEAD, by route
    assert not [p for p, operations in app.openapi()["paths"].items() if "head" in operations]  # documented as GETs


async def test_head_on_a_streamed_download_stops_it_after_the_headers() -> None:
    """HEAD ran the whole GET and dropped the body: an export read every row (holding a pool
    connection) to send headers. Now the answer ends once its headers are out, the stream is
    closed (its `finally`, which gives the connection back, runs) and the request counts as a
    200, not a crash."""
    produced: list[int] = []
    closed: list[bool] = []

    async def rows() -> AsyncGenerator[bytes, None]:
        try:
            for n in range(1, 10_001):
                produced.append(n)
                yield f"{n}\r\n".encode()
        finally:
            closed.append(True)

    router = APIRouter()
    only_these_methods(router, "/v1/things/export")

    @router.get("/v1/things/export")
    async def export() -> CsvExport:
        chunks = rows()
        return CsvExport(chunks, b"n\r\n" + await anext(chunks), "things.csv")

    app = FastAPI(docs_url=None, redoc_url=None)
    install_platform(app, "kit-test")
    app.include_router(router)
    labels = {"method": "HEAD", "route": "/v1/things/export"}
    before = {s: REGISTRY.get_sample_value("http_requests_total", {**labels, "status": s}) or 0.0 for s in ("200", "500")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        got = await client.get("/v1/things/export")
        assert got.content.count(b"\r\n") == 10_001 and closed == [True]
        produced.clear()
        closed.clear()
        head = await client.head("/v1/things/export")
    assert (
        head.status_code == 200
        and head.content == b""
        and head.headers["content-disposition"] == got.headers["content-disposition"]
    )
    assert len(produced) <= 2 and closed == [True], (len(produced), closed)

    # As a server speaking ASGI 2.4 (uvicorn) sees it: the headers, then one empty last part.
    produced.clear()
    closed.clear()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "HEAD",
        "scheme": "http",
        "path": "/v1/things/export",
        "raw_path": b"/v1/things/export",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("kit", 80),
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] and sent[0]["status"] == 200
    assert sent[1]["body"] == b"" and sent[1]["more_body"] is False
    assert len(produced) <= 2 and closed == [True], (len(produced), closed)
    after = {s: REGISTRY.get_sample_value("http_requests_total", {**labels, "status": s}) or 0.0 for s in ("200", "500")}
    assert after == {"200": before["200"] + 2, "500": before["500"]}
