"""Routers that a request outside their paths passes at once.

FastAPI (0.165) keeps each included router as a node of the app's routing tree, and a request
tries the routes of every router before the one that serves it, each at about 1.7 µs, and the
serving router's twice (once to find it, once to choose its route). It never compares the
path with the router's prefix first (proposed upstream as fastapi/fastapi#16159). With a dozen
routers under `/v1`, `POST /v1/interactions` tried 40 routes: 77 µs of each request, about 6%
of its CPU, spent before the endpoint ran.

`GatedRouter` turns such a request away with one string comparison: included through
`include_routers`, it knows where it is included, so the literal start of each of its routes'
paths (up to the first path parameter), and a path that starts with none of them is told
`Match.NONE` without a route being tried. No route of the router could have matched such a
path, so what serves a request (or the 404, 405 or trailing-slash redirect it gets) is what it
was; only the time to find it changes."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import Match
from starlette.types import Scope


class GatedRouter(APIRouter):
    """An `APIRouter` that answers `Match.NONE` at once for an HTTP path outside its prefixes.

    Armed only by `include_routers` (which records where it is served); a router included
    anywhere else as well must be included there through `include_routers` too, or it would
    turn away the requests for that place. Unarmed, it routes as an `APIRouter` does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served_under: list[str] = []
        self._gate: tuple[str, ...] | None = None
        self._gate_routes = -1  # len(self.routes) when `_gate` was worked out

    def serve_under(self, prefix: str) -> None:
        """Record that the router is included at `prefix`."""
        if prefix not in self._served_under:
            self._served_under.append(prefix)
            self._gate_routes = -1

    def gate(self) -> tuple[str, ...] | None:
        """The path prefixes a request must start with to reach one of the routes; None when
        the router is not armed, or when a route has no plain path (anything may reach it)."""
        if self._gate_routes != len(self.routes):
            self._gate = _gate(self._served_under, self.routes)
            self._gate_routes = len(self.routes)
        return self._gate

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        gate = self.gate()
        if gate is not None and scope["type"] == "http" and not _route_path(scope).startswith(gate):
            return Match.NONE, {}
        return super().matches(scope)


def _gate(served_under: list[str], routes: Iterable[Any]) -> tuple[str, ...] | None:
    if not served_under:
        return None
    literals: list[str] = []
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return None
        literals.append(path.split("{", 1)[0])
    gate: dict[str, None] = {}  # in order, without repeats
    for prefix in served_under:
        if "{" in prefix:  # a prefix holding a path parameter is literal only up to it
            gate[prefix.split("{", 1)[0]] = None
        else:
            gate.update(dict.fromkeys(prefix + literal for literal in literals))
    return tuple(gate)


def _route_path(scope: Scope) -> str:
    """The path routes are matched against: without the app's `root_path`, as Starlette does
    (`starlette._utils.get_route_path`)."""
    path: str = scope["path"]
    root_path = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


def include_routers(app: FastAPI, routers: Iterable[APIRouter], prefix: str = "") -> None:
    """`app.include_router(router, prefix=prefix)` for each, arming the `GatedRouter`s."""
    for router in routers:
        app.include_router(router, prefix=prefix)
        if isinstance(router, GatedRouter):
            router.serve_under(prefix)


def threadpool_calls(app: FastAPI) -> list[str]:
    """Every endpoint and dependency of `app`'s routes that FastAPI runs in its thread pool: a
    plain `def` (or a class, or an object whose `__call__` is plain) is called through
    `run_in_threadpool`, a thread hop that cost about 120 µs of CPU per request more than the same
    function as `async def` (FastAPI 0.165, a two-parameter query dependency). Nothing here
    blocks, so all of it should run on the event loop."""
    found = set()
    for route in iter_route_contexts(app.router.routes):
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        operation = f"{','.join(sorted(route.methods or ()))} {route.path}"
        if not _on_the_loop(route.endpoint):
            found.add(f"{operation}: the endpoint {_qualname(route.endpoint)}")
        stack = list(dependant.dependencies)
        while stack:
            sub = stack.pop()
            stack.extend(sub.dependencies)
            if sub.call is not None and not _on_the_loop(sub.call):
                found.add(f"the dependency {_qualname(sub.call)}")
    return sorted(found)


def _unwrapped(call: Any) -> Any:
    while isinstance(call, functools.partial):
        call = call.func
    return call


def _on_the_loop(call: Any) -> bool:
    call = _unwrapped(call)
    if inspect.isclass(call):
        return False
    target = call if inspect.isroutine(call) else type(call).__call__  # an instance: its class's method
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def _qualname(call: Any) -> str:
    call = _unwrapped(call)
    if inspect.isroutine(call) or inspect.isclass(call):
        return f"{call.__module__}.{call.__qualname__}"
    return f"{type(call).__module__}.{type(call).__qualname__}()"  # an instance: its class
