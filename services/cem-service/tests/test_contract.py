"""The contract on every route: documented operations, keys and scopes, and never a 500 for bad input."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cxkit.http.answers import answer_drift
from cxkit.http.examples import invalid_examples
from cxkit.http.routing import threadpool_calls
from cxkit.testing import bearer

NASTY: list[Any] = [
    None,
    "",
    "   ",
    "nul \u0000 byte",
    "x" * 20_000,
    10**40,
    -(10**40),
    1.5e308,
    -1,
    True,
    [],
    {},
    ["\u0000"],
    {"\u0000": 1},
    "not-a-uuid",
    "0001-01-01T00:00:00+14:00",
]
NASTY_QUERY = [
    "\u0000",
    "x" * 3000,
    "-1",
    "99999999999999999999999",
    "",
    "2026-13-45",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T12:00:00Z",  # a `from` past the calendar's last midnight
    "null",
]
GARBAGE_BODIES = [b"", b"{", b"[]", b"null", b'"text"', b"1e999", b"[" * 5000 + b"]" * 5000, b'{"a": NaN}', b"\xff\xfe"]


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every documented operation."""
    return [(m.upper(), path, op) for path, item in app.openapi()["paths"].items() for m, op in item.items()]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _has_example(spec: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> bool:
    """An example on the schema, or (lists) on the schema of the items it carries."""
    schema = _resolve(spec, schema)
    if schema.get("examples") or schema.get("example") is not None:
        return True
    if depth > 2:
        return False
    for prop in schema.get("properties", {}).values():
        if prop.get("type") == "array" and "items" in prop and _has_example(spec, prop["items"], depth + 1):
            return True
    return any(_has_example(spec, s, depth + 1) for s in schema.get("anyOf", []) + schema.get("oneOf", []) if "$ref" in s)


def _content_has_example(spec: dict[str, Any], content: dict[str, Any]) -> bool:
    return any(
        media.get("example") is not None or media.get("examples") or _has_example(spec, media.get("schema", {}))
        for media in content.values()
    )


async def test_every_operation_has_a_summary_a_description_and_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json", headers={"Authorization": ""})).json()
    missing = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            if not op.get("summary") or not op.get("description"):
                missing.append(f"{where}: summary/description")
            if "requestBody" in op and not _content_has_example(spec, op["requestBody"]["content"]):
                missing.append(f"{where}: request example")
            ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            with_body = {code: r for code, r in ok.items() if r.get("content") and code != "204"}
            for code, response in with_body.items():
                if not _content_has_example(spec, response["content"]):
                    missing.append(f"{where}: {code} response example")
            params = op.get("parameters", [])
            if (
                not with_body
                and "requestBody" not in op
                and not any(p.get("example") or p.get("examples") or p["schema"].get("examples") for p in params)
            ):
                missing.append(f"{where}: no example anywhere")
    assert missing == []
    assert "/r/{token}" in spec["paths"] and "/v1/analytics/nps" in spec["paths"]


def test_the_respondent_form_documents_its_400_for_an_unreadable_body(cem_app: FastAPI) -> None:
    """`POST /r/{token}` answers 400 (the form again, with a message) for a body it cannot read
    or that is too large: the document says so."""
    responses = cem_app.openapi()["paths"]["/r/{token}"]["post"]["responses"]
    assert {"200", "400", "404", "409", "410", "422"} <= set(responses)
    assert responses["400"]["description"] and "text/html" in responses["400"]["content"]


def test_every_documented_answer_is_stated_once_by_what_sends_it(cem_app: FastAPI) -> None:
    """A route's response model is its `-> ModelResponse[X]` annotation (checked on every answer by
    TypedRoute) or a model FastAPI serializes itself; no route documents one model and sends
    another, or sends JSON it does not document."""
    assert answer_drift(cem_app) == []


def test_no_endpoint_or_dependency_runs_in_the_thread_pool(cem_app: FastAPI) -> None:
    """FastAPI calls a plain `def` through its thread pool (about 120 µs more CPU per request):
    the query readers of the lists and exports are `async def` like everything else."""
    assert threadpool_calls(cem_app) == []


def test_every_documented_example_is_a_valid_instance_of_its_schema(cem_app: FastAPI) -> None:
    """The examples in /openapi.json keep their nulls (FastAPI drops them: cxkit.http.examples)
    and each one validates against its model, so a client mocked from the document gets what
    the API sends."""
    schemas = cem_app.openapi()["components"]["schemas"]
    assert sum(len(schema.get("examples", [])) for schema in schemas.values()) >= 40
    assert invalid_examples(cem_app) == []


async def test_every_v1_route_needs_a_key_and_writes_need_the_write_scope(
    client: httpx.AsyncClient, cem_app: FastAPI, keys: dict[str, str]
) -> None:
    some_id = "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10"
    checked = 0
    for method, path, _route in _operations(cem_app):
        if not path.startswith("/v1/"):
            continue
        url = re.sub(r"\{[^}]+\}", some_id, path)
        anonymous = await client.request(method, url, json={}, headers={"Authorization": ""})
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        revoked = await client.request(method, url, json={}, headers=bearer(keys["revoked"]))
        assert revoked.status_code == 401, (method, path)
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            reader = await client.request(method, url, json={}, headers=bearer(keys["read"]))
            assert reader.status_code == 403, (method, path, reader.text)
        checked += 1
    assert checked >= 32  # every /v1 operation of the service


@pytest.fixture
async def resources(client: httpx.AsyncClient, make: Any) -> dict[str, str]:
    """One of everything, so path parameters point at real rows."""
    touchpoint = await make.touchpoint("checkout", target_metric="nps", target_score=40)
    survey = await make.survey("nps", touchpoint="checkout")
    journey = (
        await client.post("/v1/journeys", json={"name": "J", "stages": [{"name": "S", "touchpoints": ["checkout"]}]})
    ).json()
    customer = await make.customer()
    invitation = await make.invitation(survey["id"], customer_id=str(customer))
    spare = await make.invitation(survey["id"], customer_id=str(customer))
    response = await make.answer(survey["id"], {"nps": 9})
    await make.answer(survey["id"], {"nps": 2}, customer_id=str(customer))  # a detractor: a follow-up
    [followup] = (await client.get("/v1/followups")).json()["items"]
    feedback = (await client.post("/v1/feedback", json={"channel": "chat", "text": "Fine"})).json()
    return {
        "touchpoint_id": touchpoint["id"],
        "survey_id": survey["id"],
        "journey_id": journey["id"],
        "customer_id": str(customer),
        "invitation_id": invitation["id"],
        "response_id": response["id"],
        "feedback_id": feedback["id"],
        "followup_id": followup["id"],
        "token": spare["token"],
        "event_type": "survey.invited",
        "webhook_id": (await client.post("/v1/webhooks", json={"url": "https://93.184.216.34/hook"})).json()["id"],
        "delivery_id": str(uuid.uuid4()),
    }


def _url(path: str, resources: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: resources[m.group(1)], path)


async def test_no_bad_body_is_a_server_error(client: httpx.AsyncClient, cem_app: FastAPI, resources: dict[str, str]) -> None:
    spec = cem_app.openapi()
    failures = []
    for method, path, op in _operations(cem_app):
        if method not in ("POST", "PATCH") or "requestBody" not in op or path.startswith("/r/"):
            continue
        url = _url(path, resources)
        for raw in GARBAGE_BODIES:
            r = await client.request(method, url, content=raw, headers={"content-type": "application/json"})
            if r.status_code >= 500:
                failures.append((method, path, raw[:20], r.status_code))
        schema = _resolve(spec, op["requestBody"]["content"]["application/json"]["schema"])
        example = (schema.get("examples") or [{}])[0]
        for field in sorted(set(schema.get("properties", {})) | set(example)):
            for value in NASTY:
                r = await client.request(method, url, json={**example, field: value})
                if r.status_code >= 500:
                    failures.append((method, path, field, repr(value)[:30], r.status_code))
    assert failures == []


async def test_no_bad_query_or_path_is_a_server_error(
    client: httpx.AsyncClient, cem_app: FastAPI, resources: dict[str, str]
) -> None:
    cem_app.openapi()
    failures = []
    for method, path, op in _operations(cem_app):
        if method != "GET":
            continue
        url = _url(path, resources)
        for param in op.get("parameters", []):
            values = NASTY_QUERY if param["in"] == "query" else ["not-a-uuid", "%00", "0" * 1000]
            for value in values:
                if param["in"] == "query":
                    r = await client.get(url, params={param["name"]: value})
                else:
                    r = await client.get(path.replace("{" + param["name"] + "}", value))
                if r.status_code >= 500:
                    failures.append((path, param["name"], value[:20], r.status_code))
    for token in ["%00", "x" * 5000, "..%2F..%2Fetc", resources["token"] + "x"]:
        for method in ("GET", "POST"):
            r = await client.request(method, f"/r/{token}", data={"q_nps": "9"} if method == "POST" else None)
            if r.status_code >= 500:
                failures.append((method, "/r/{token}", token[:20], r.status_code))
    assert failures == []


async def test_lists_bound_limit_and_refuse_bad_cursors(
    client: httpx.AsyncClient, cem_app: FastAPI, resources: dict[str, str]
) -> None:
    spec = cem_app.openapi()
    lists = [
        p
        for p, item in spec["paths"].items()
        if "get" in item and any(q["name"] == "cursor" for q in item["get"].get("parameters", []))
    ]
    assert len(lists) == 12  # with /v1/webhooks and its deliveries, /v1/opt-outs and /v1/followups
    for path in lists:
        url = _url(path, resources)
        body = (await client.get(url)).json()
        assert set(body) == {"items", "next_cursor"}, path
        for params in [{"limit": 0}, {"limit": 201}, {"cursor": "%%%"}, {"cursor": "WzEsMiwzXQ"}, {"cursor": "eyJhIjoxfQ"}]:
            r = await client.get(url, params=params)
            assert r.status_code == 422, (path, params, r.text)
