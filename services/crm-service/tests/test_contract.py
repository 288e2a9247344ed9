"""The contract rules of SPEC section 4 on every route: documented operations, pagination,
auth scopes, ETags, idempotent writes, and no 500 for any bad input."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from crm.interactions.models import Interaction
from cxkit.http.answers import answer_drift
from cxkit.http.examples import invalid_examples
from cxkit.http.routing import threadpool_calls
from cxkit.testing import bearer

OPEN_PATHS = {"/health", "/ready", "/metrics", "/v1/shared/documents/{document_id}"}
WRITE_METHODS = {"post", "patch", "put", "delete"}


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    spec = app.openapi()
    return [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]


def _resolve(spec: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    while schema and "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema or {}


def _has_example(spec: dict[str, Any], op: dict[str, Any]) -> bool:
    for param in op.get("parameters", []):
        if param.get("example") is not None or param.get("examples") or param.get("schema", {}).get("examples"):
            return True
    bodies = [op.get("requestBody", {})] + [r for code, r in op.get("responses", {}).items() if code.startswith("2")]
    for body in bodies:
        for media in body.get("content", {}).values():
            if "example" in media or "examples" in media or _resolve(spec, media.get("schema")).get("examples"):
                return True
    return False


def test_every_operation_has_a_summary_a_description_and_an_example(crm_app: FastAPI) -> None:
    spec = crm_app.openapi()
    missing = []
    for path, method, op in _operations(crm_app):
        if not path.startswith("/v1"):
            continue
        if not op.get("summary") or not op.get("description") or not _has_example(spec, op):
            missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_every_documented_answer_is_stated_once_by_what_sends_it(crm_app: FastAPI) -> None:
    """A route's response model is its `-> ModelResponse[X]` annotation (checked on every answer by
    TypedRoute) or a model FastAPI serializes itself; no route documents one model and sends
    another, or sends JSON it does not document."""
    assert answer_drift(crm_app) == []


def test_no_endpoint_or_dependency_runs_in_the_thread_pool(crm_app: FastAPI) -> None:
    """FastAPI calls a plain `def` through its thread pool (about 120 µs more CPU per request):
    the query readers of the lists and exports are `async def` like everything else."""
    assert threadpool_calls(crm_app) == []


def test_every_documented_example_is_a_valid_instance_of_its_schema(crm_app: FastAPI) -> None:
    """The examples in /openapi.json keep their nulls (FastAPI drops them: cxkit.http.examples)
    and each one validates against its model, so a client mocked from the document gets what
    the API sends."""
    schemas = crm_app.openapi()["components"]["schemas"]
    assert sum(len(schema.get("examples", [])) for schema in schemas.values()) >= 40
    assert invalid_examples(crm_app) == []


def test_every_v1_operation_documents_its_problem_answers(crm_app: FastAPI) -> None:
    for path, method, op in _operations(crm_app):
        if path.startswith("/v1") and path not in OPEN_PATHS:
            assert {"401", "403", "422"} <= set(op["responses"]), f"{method} {path}"


@pytest.fixture
async def world(client: httpx.AsyncClient, make: Any) -> dict[str, str]:
    """One of everything, to fill path parameters."""
    customer = await make.customer()
    deal = await make.deal(customer["id"])
    campaign = await make.campaign()
    member = (await client.post(f"/v1/campaigns/{campaign['id']}/members", json={"customer_id": customer["id"]})).json()
    document = (
        await client.post(
            "/v1/documents", data={"customer_id": customer["id"]}, files={"file": ("a.pdf", b"%PDF", "application/pdf")}
        )
    ).json()
    return {
        "customer_id": customer["id"],
        "lead_id": (await make.lead())["id"],
        "deal_id": deal["id"],
        "pipeline_id": deal["pipeline_id"],
        "interaction_id": (await make.interaction(customer_id=customer["id"]))["id"],
        "task_id": (await make.task(customer["id"]))["id"],
        "campaign_id": campaign["id"],
        "member_id": member["id"],
        "document_id": document["id"],
        "webhook_id": (await client.post("/v1/webhooks", json={"url": "https://93.184.216.34/hook"})).json()["id"],
        "delivery_id": str(uuid.uuid4()),
        "import_id": (
            await client.post("/v1/imports", files={"file": ("c.csv", b"email,name\na@example.com,A\n", "text/csv")})
        ).json()["id"],
    }


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


async def test_no_key_is_401_and_a_read_key_cannot_write(
    client: httpx.AsyncClient, crm_app: FastAPI, keys: dict[str, str], world: dict[str, str]
) -> None:
    for path, method, _ in _operations(crm_app):
        if not path.startswith("/v1") or path in OPEN_PATHS:
            continue
        url = _fill(path, world)
        anonymous = await client.request(method, url, headers={"Authorization": ""})
        assert anonymous.status_code == 401, f"{method} {path}"
        assert anonymous.headers["content-type"] == "application/problem+json"
        if method in WRITE_METHODS:
            as_reader = await client.request(method, url, json={}, headers=bearer(keys["read"]))
            assert as_reader.status_code == 403, f"{method} {path}: {as_reader.status_code}"


async def test_every_list_pages_with_limit_and_cursor_and_refuses_bad_ones(
    client: httpx.AsyncClient, crm_app: FastAPI, world: dict[str, str]
) -> None:
    spec = crm_app.openapi()
    lists = []
    for path, method, op in _operations(crm_app):
        schema = _resolve(
            spec, op.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {}).get("schema")
        )
        if method == "get" and path.startswith("/v1") and set(schema.get("properties", {})) == {"items", "next_cursor"}:
            lists.append(path)
    assert len(lists) >= 11, lists
    for path in lists:
        url = _fill(path, world)
        page = await client.get(url, params={"limit": 1})
        assert page.status_code == 200, (path, page.text)
        body = page.json()
        assert set(body) == {"items", "next_cursor"} and len(body["items"]) <= 1
        for params in (
            {"limit": 0},
            {"limit": 201},
            {"limit": "ten"},
            {"cursor": "%%%"},
            {"cursor": "W10"},
            {"cursor": "x" * 3000},
        ):
            r = await client.get(url, params=params)
            assert r.status_code == 422, (path, params, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
        for values, cursor in CRAFTED_CURSORS:
            # Also with the sort the cursor names, so that a list sorted so decodes its value.
            sorts = [{}, {"sort": values[0]}] if isinstance(values[0], str) else [{}]
            for sort in sorts:
                r = await client.get(url, params={"cursor": cursor, **sort})
                assert r.status_code in (200, 422), (path, values, sort, r.status_code, r.text)


async def test_mutable_resources_carry_version_and_etag(client: httpx.AsyncClient, world: dict[str, str]) -> None:
    for path in (
        "customers/{customer_id}",
        "leads/{lead_id}",
        "deals/{deal_id}",
        "tasks/{task_id}",
        "campaigns/{campaign_id}",
        "pipelines/{pipeline_id}",
    ):
        r = await client.get("/v1/" + _fill(path, world))
        assert r.status_code == 200 and r.headers["etag"] == f'"{r.json()["version"]}"', path


async def test_stale_if_match_is_412_on_every_patch(client: httpx.AsyncClient, world: dict[str, str]) -> None:
    bodies = {
        "customers/{customer_id}": {"name": "x"},
        "leads/{lead_id}": {"score": 5},
        "deals/{deal_id}": {"title": "x"},
        "tasks/{task_id}": {"title": "x"},
        "campaigns/{campaign_id}": {"description": "x"},
        "pipelines/{pipeline_id}": {"name": "Renamed"},
    }
    for path, body in bodies.items():
        r = await client.patch("/v1/" + _fill(path, world), json=body, headers={"If-Match": '"99"'})
        assert r.status_code == 412, (path, r.status_code)


NASTY_VALUES: list[Any] = [
    None,
    2**80,
    -(2**80),
    1e308,
    "",
    "x" * 20_000,
    "\x00",
    [],
    {},
    {"a": [1, {"b": None}]},
    True,
    "2026-13-45",
    "NaN",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+05:00",
]
BAD_TIMES = ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"]
CRAFTED_CURSORS = [
    (values, base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("="))
    for values in (
        ["-created_at", BAD_TIMES[0], str(uuid.uuid4())],
        ["-created_at", "2026-01-01T00:00:00", str(uuid.uuid4())],
        ["-score", 2**80, str(uuid.uuid4())],
        ["-score", 2**40, str(uuid.uuid4())],
        ["-amount", "NaN", str(uuid.uuid4())],
        ["-amount", "1e999999", str(uuid.uuid4())],
        ["amount", "1E+16", str(uuid.uuid4())],
        ["-amount", "1E-20000", str(uuid.uuid4())],
        ["due_at", None, str(uuid.uuid4())],
        [2**80],
        [2**40],
        [BAD_TIMES[1], "interaction", str(uuid.uuid4())],
        ["name", "a\x00", str(uuid.uuid4())],
        [None, None, None],
    )
]


async def test_bad_input_is_never_a_500(client: httpx.AsyncClient, crm_app: FastAPI, world: dict[str, str]) -> None:
    spec = crm_app.openapi()
    failures: list[str] = []
    for path, method, op in _operations(crm_app):
        if not path.startswith("/v1"):
            continue
        targets = [_fill(path, world)]
        if "{" in path:
            targets += [_fill(path, {k: "not-a-uuid" for k in world}), _fill(path, {k: str(uuid.uuid4()) for k in world})]
        for url in targets:
            if method in ("get", "delete"):
                r = await client.request(method, url)
                if r.status_code >= 500:
                    failures.append(f"{method} {url}: {r.status_code}")
        url = targets[0]
        for param in op.get("parameters", []):
            if param["in"] == "query":
                for value in ("\x00", "x" * 5000, "-1", "9" * 40, "2026-13-45T00:00:00Z", "", *BAD_TIMES):
                    r = await client.request(method, url, params={param["name"]: value}) if method == "get" else None
                    if r is not None and r.status_code >= 500:
                        failures.append(f"{method} {path}?{param['name']}={value[:20]!r}: {r.status_code}")
        media = op.get("requestBody", {}).get("content", {}).get("application/json")
        if not media:
            continue
        schema = _resolve(spec, media.get("schema"))
        props = list(schema.get("properties", {}))
        example = (schema.get("examples") or [{}])[0]
        for prop, value in itertools.product(props, NASTY_VALUES):
            body = {**example, prop: value}
            r = await client.request(method, url, json=body)
            if r.status_code >= 500:
                failures.append(f"{method} {path} {prop}={str(value)[:20]!r}: {r.status_code} {r.text[:200]}")
        for raw in (b"[]", b"null", b"1", b'"s"', b"{", b'{"a":' * 50):
            r = await client.request(method, url, content=raw, headers={"content-type": "application/json"})
            if r.status_code >= 500:
                failures.append(f"{method} {path} raw={raw[:20]!r}: {r.status_code}")
    assert failures == []


async def test_concurrent_interactions_with_one_idempotency_key_record_one_row(
    client: httpx.AsyncClient, make: Any, session_factory: Any, events: Any
) -> None:
    customer = await make.customer()
    body = {"customer_id": customer["id"], "type": "purchase", "amount": "10.00"}
    answers = await asyncio.gather(
        *[client.post("/v1/interactions", json=body, headers={"Idempotency-Key": "pos-77"}) for _ in range(8)]
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Interaction)) == 1
    assert len(await events("interaction.recorded")) == 1
