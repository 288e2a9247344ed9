"""Both services route every request where they routed it before their routers were gated
(cxkit.http.routing): each documented path and method, the methods a path does not serve
(405), trailing slashes (307) and near misses (404) reach the same route or answer with the
gates as without them. Routing only: the chosen route's handler is replaced by a recorder."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.types import Receive, Scope, Send

from cem.main import create_app as create_cem
from crm.main import create_app as create_crm
from cxkit.http.routing import GatedRouter

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")
_SAMPLE = {"event_type": "customer.created", "token": "t0k3n"}
_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")


def _paths(app: FastAPI) -> list[str]:
    """A concrete path for each route template, with a trailing slash, and a near miss."""
    paths: set[str] = set()
    for context in iter_route_contexts(app.router.routes):
        template = getattr(context, "path_format", None) or getattr(context, "path", None)
        if not isinstance(template, str):
            continue
        path = _PARAM.sub(lambda m: _SAMPLE.get(m.group(1), "00000000-0000-4000-8000-000000000001"), template)
        paths.update({path, path + "/", path[:-1] or "/", path + "x"})
    return sorted(paths)


async def _outcomes(app: FastAPI, paths: list[str]) -> dict[tuple[str, str], tuple[int, str, str | None]]:
    """(method, path) -> (status, the route that handled it, Location)."""
    chosen: dict[str, str] = {}

    async def record(self: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        name = f"{self.endpoint.__module__}.{self.endpoint.__qualname__} {sorted(self.methods)}"
        chosen["route"] = name
        status = 204 if scope["method"] in self.methods else 405
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    outcomes = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(APIRoute, "handle", record)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in paths:
                for method in _METHODS:
                    chosen.clear()
                    response = await client.request(method, path, follow_redirects=False)
                    outcomes[(method, path)] = (response.status_code, chosen.get("route", ""), response.headers.get("location"))
    return outcomes


@pytest.mark.parametrize("factory", [create_crm, create_cem], ids=["crm", "cem"])
async def test_every_path_is_routed_as_it_was_without_the_gates(factory: Any) -> None:
    app = factory()
    gated = [r.original_router for r in app.router.routes if isinstance(getattr(r, "original_router", None), GatedRouter)]
    assert len(gated) >= 10  # the API's routers, the ops routes
    assert all(router.gate() for router in gated)
    paths = _paths(app)
    assert len(paths) > 100
    with_gates = await _outcomes(app, paths)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GatedRouter, "matches", APIRouter.matches)  # every router as FastAPI's own
        without = await _outcomes(app, paths)
    assert with_gates == without
    # The comparison saw every kind of answer.
    assert {status for status, _, _ in with_gates.values()} >= {204, 307, 404, 405}
