"""GatedRouter: a request outside a router's paths passes it without a route being tried, and
routes exactly where it did before."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.routing import Match

from cxkit.http.routing import GatedRouter, include_routers, threadpool_calls


def _answering(name: str) -> Any:
    """An endpoint that answers its name and the path's parameters."""

    async def endpoint(request: Request) -> str:
        return " ".join([name, *request.path_params.values()])

    return endpoint


def _app() -> tuple[FastAPI, dict[str, APIRouter]]:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    routers: dict[str, APIRouter] = {
        "customers": GatedRouter(prefix="/customers"),
        "deals": GatedRouter(prefix="/deals"),
        "plain": APIRouter(prefix="/plain"),  # not gated: routes as FastAPI does
        "nested": GatedRouter(prefix="/nested"),  # holds a router of its own
        "param": GatedRouter(prefix="/t/{tenant}/orders"),  # a prefix with a path parameter
    }

    inner = APIRouter(prefix="/inner")
    routers["nested"].include_router(inner)
    for router, method, path, name in [
        (routers["customers"], "GET", "", "list_customers"),
        (routers["customers"], "GET", "/{customer_id}", "get_customer"),
        (routers["customers"], "GET", "/{customer_id}/view", "view"),
        (routers["deals"], "POST", "", "create_deal"),
        (routers["deals"], "GET", "/{deal_id}/history", "history"),
        (routers["plain"], "GET", "/x", "plain"),
        (inner, "GET", "/y", "nested"),
        (routers["param"], "GET", "/{order_id}", "order"),
    ]:
        router.add_api_route(path, _answering(name), methods=[method])
    include_routers(app, [routers["customers"], routers["deals"], routers["nested"], routers["param"]], prefix="/v1")
    app.include_router(routers["plain"], prefix="/v1")
    return app, routers


async def _get(app: FastAPI, method: str, path: str, root_path: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, follow_redirects=False)


CASES = [
    ("GET", "/v1/customers", 200, "list_customers"),
    ("GET", "/v1/customers/7", 200, "get_customer 7"),
    ("GET", "/v1/customers/7/view", 200, "view 7"),
    ("POST", "/v1/deals", 200, "create_deal"),
    ("GET", "/v1/deals/3/history", 200, "history 3"),
    ("GET", "/v1/plain/x", 200, "plain"),
    ("GET", "/v1/nested/inner/y", 200, "nested"),
    ("GET", "/v1/t/acme/orders/9", 200, "order acme 9"),
    ("POST", "/v1/customers/7", 405, None),  # the path is served, the method is not
    ("GET", "/v1/deals", 405, None),
    ("GET", "/v1/customers/7/", 307, None),  # the trailing-slash redirect
    ("GET", "/v1/customerz/7", 404, None),
    ("GET", "/customers/7", 404, None),  # the router's own prefix without the one it is served under
    ("GET", "/v1/nested/y", 404, None),
]


@pytest.mark.parametrize(("method", "path", "status", "body"), CASES)
async def test_each_request_reaches_what_it_reached_without_the_gates(
    method: str, path: str, status: int, body: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = _app()
    response = await _get(app, method, path)
    assert response.status_code == status
    if body is not None:
        assert response.json() == body
    monkeypatch.setattr(GatedRouter, "matches", APIRouter.matches)  # every router as FastAPI's own
    plain = await _get(app, method, path)
    assert (plain.status_code, plain.content, plain.headers.get("location")) == (
        response.status_code,
        response.content,
        response.headers.get("location"),
    )


async def test_a_root_path_is_left_out_of_the_comparison() -> None:
    app, _ = _app()
    response = await _get(app, "GET", "/api/v1/customers/7", root_path="/api")
    assert response.json() == "get_customer 7"


async def test_a_request_tries_no_route_of_a_router_it_cannot_reach() -> None:
    app, routers = _app()
    tries: Counter[str] = Counter()
    for router in routers.values():
        for route in router.routes:
            inner = route.matches

            def counting(scope: Any, route: Any = route, inner: Any = inner) -> tuple[Match, Any]:
                tries[route.path] += 1
                return inner(scope)

            route.matches = counting  # type: ignore[method-assign]
    assert (await _get(app, "GET", "/v1/deals/3/history")).json() == "history 3"
    # Without the gates the customers' three routes were each tried, before the deals'.
    assert not [path for path in tries if path.startswith("/customers")]
    assert tries["/deals/{deal_id}/history"] >= 1
    tries.clear()
    assert (await _get(app, "GET", "/v1/plain/x")).json() == "plain"
    assert not [path for path in tries if not path.startswith("/plain")]


def test_the_gate_is_the_literal_start_of_each_route_where_the_router_is_served() -> None:
    _, routers = _app()
    customers = routers["customers"]
    assert isinstance(customers, GatedRouter)
    assert customers.gate() == ("/v1/customers", "/v1/customers/")
    assert routers["param"].gate() == ("/v1/t/",)  # type: ignore[attr-defined]
    # A router holding another router has no plain path for it: not gated.
    assert routers["nested"].gate() is None  # type: ignore[attr-defined]

    # A route added later is counted in.
    @customers.get("/export/all")
    async def export() -> str:
        return "export"

    assert "/v1/customers/export/all" in (customers.gate() or ())
    customers.serve_under("/v2")
    assert "/v2/customers" in (customers.gate() or ())


# What `threadpool_calls` is shown: module-level, so FastAPI can resolve the test's (string)
# annotations.
def _plain_filter(q: str | None = None) -> str | None:
    return q


async def _async_filter(q: str | None = None) -> str | None:
    return q


async def _outer(inner: Annotated[str | None, Depends(_plain_filter)]) -> str | None:
    return inner


async def _session() -> AsyncIterator[int]:
    yield 1


class _Checker:
    async def __call__(self) -> bool:
        return True


class _PlainChecker:
    def __call__(self) -> bool:
        return True


class _Params:
    def __init__(self, limit: int = 10) -> None:
        self.limit = limit


_threads = GatedRouter(prefix="/v1")


@_threads.get("/fine")
async def _fine(
    a: Annotated[str | None, Depends(_async_filter)],
    s: Annotated[int, Depends(_session)],
    c: Annotated[bool, Depends(_Checker())],
    p: Annotated[str | None, Depends(functools.partial(_async_filter))],
) -> str:
    return "ok"


@_threads.get("/nested")
async def _nested(a: Annotated[str | None, Depends(_outer)]) -> str:
    return "ok"


@_threads.get("/plain")
def _plain() -> str:
    return "ok"


@_threads.get("/objects")
async def _objects(c: Annotated[bool, Depends(_PlainChecker())], p: Annotated[_Params, Depends()]) -> str:
    return "ok"


def test_threadpool_calls_names_every_plain_function_fastapi_would_run_in_a_thread() -> None:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    include_routers(app, [_threads])
    here = __name__
    assert threadpool_calls(app) == [
        f"GET /v1/plain: the endpoint {here}._plain",
        f"the dependency {here}._Params",
        f"the dependency {here}._PlainChecker()",
        f"the dependency {here}._plain_filter",
    ]
