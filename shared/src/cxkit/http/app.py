"""What every app gets: request id + trace middleware with metrics, problem handlers,
`/health`, `/ready`, `/metrics`."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.body_limit import capped_receive, too_large_response
from cxkit.http.cors import install_cors
from cxkit.http.docs import install_offline_docs
from cxkit.http.etag import IF_NONE_MATCH_SCOPE_KEY
from cxkit.http.examples import keep_example_nulls
from cxkit.http.problems import (
    PROBLEM_MEDIA_TYPE,
    NotFound,
    Problem,
    document_problems_as_problem_json,
    install_problem_handlers,
    on_crash,
    problem_response,
)
from cxkit.http.ratelimit import SCOPE_KEY as RATE_LIMIT_SCOPE_KEY
from cxkit.http.responses import JSONBytesResponse
from cxkit.http.routing import GatedRouter, include_routers
from cxkit.logs import ACCESS_LOG, request_id_var
from cxkit.metrics import HTTP_LATENCY, HTTP_REQUESTS, exposition
from cxkit.tracing import request_span

DEFAULT_MAX_BODY_BYTES = 1_048_576
_BODYLESS_METHODS = frozenset({"GET", "OPTIONS"})  # HEAD is too, and is served as a GET (_head_as_get)


class _Unanswered(int):
    """The status of a request while no answer has started: counted and logged as a 500 (what
    the server sends if none comes), and told apart from a 500 that was sent by identity, only
    when an exception escapes; so the success path does nothing to track it."""


_UNANSWERED = _Unanswered(500)


class _HeadAnswered(Exception):
    """Raised by the `send` of a HEAD (`_head_as_get`) once the headers and the last, empty part
    are out: it unwinds the GET that is streaming the body, so the stream is closed (an export's
    cursor with it) instead of read to its end only to be dropped. Caught in `_head_as_get`."""


def _declared_length(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return -1  # the server refuses a malformed Content-Length before we see it


class RequestContextMiddleware:
    """Pure ASGI: request id, the trace context in the answer, metrics, the access line, the body cap
    (`max_body_bytes`, see cxkit.http.body_limit) and the rate-limit fields of the answer.

    Per request it does only what it must: one pass over the headers, the headers added to
    the response start, metric children cached per (method, route, status) in one lookup.
    Metrics are labelled with the route template (`/r/{token}`), never the raw path, so no id
    or token becomes a label; a path no route matched is `unmatched`.

    Two things it does only when they happen, at no cost to other requests:
    - an exception no handler took (a bug) is answered here, as `on_crash` renders it (500
      problem+json and the `unhandled error` line with its traceback), so the 500 carries the
      request id, the trace context, the rate-limit fields and, outside this, the CORS headers
      like every other answer. (Starlette answers it in ServerErrorMiddleware, outside all user
      middleware, which stays as the backstop for a crash in the middleware itself.)
    - HEAD is served wherever GET is (RFC 9110 9.3.2): run as that GET, sent without its body.
      FastAPI routes take only the methods they name, so HEAD was a 405 on every path."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._max_digits = len(str(max_body_bytes))  # a shorter Content-Length is under the cap
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        incoming = None
        content_length = None
        multipart = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:100]
            elif name == b"traceparent":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value
            elif name == b"content-type":
                multipart = value[:10].lower() == b"multipart/"
            elif name == b"if-none-match":
                scope[IF_NONE_MATCH_SCOPE_KEY] = value.decode("latin-1")
        request_id = request_id or f"{random.getrandbits(128):032x}"
        with request_span(incoming, scope["path"]) as traceparent:  # cxkit.tracing
            await self._handle(scope, receive, send, request_id, traceparent, content_length, multipart)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        traceparent: str | None,
        content_length: bytes | None,
        multipart: bool,
    ) -> None:
        request_id_var.set(request_id)
        added = [(b"x-request-id", request_id.encode("latin-1"))]
        if traceparent is not None:
            added.append((b"traceparent", traceparent.encode()))
        started = time.perf_counter()
        status: int = _UNANSWERED

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), *added]
                limits = scope.get(RATE_LIMIT_SCOPE_KEY)
                if limits:  # set by the auth dependency (cxkit.http.ratelimit)
                    headers += limits
                message["headers"] = headers
            await send(message)

        try:
            if content_length is not None:  # the server delivers no more than declared
                if len(content_length) < self._max_digits or _declared_length(content_length) <= self.max_body_bytes:
                    await self.app(scope, receive, send_with_ids)
                elif multipart:  # an upload, if the route takes them (see cxkit.http.body_limit)
                    await self.app(scope, capped_receive(receive, self.max_body_bytes, scope), send_with_ids)
                else:
                    await too_large_response(self.max_body_bytes)(scope, receive, send_with_ids)
            elif scope["method"] in _BODYLESS_METHODS:
                await self.app(scope, receive, send_with_ids)
            elif scope["method"] == "HEAD":
                await self._head_as_get(scope, receive, send_with_ids)
            else:  # a chunked body: counted as it arrives
                await self.app(scope, capped_receive(receive, self.max_body_bytes, scope if multipart else None), send_with_ids)
        except Exception as exc:
            if status is not _UNANSWERED:  # the answer had started (a stream broke off): nothing more can be sent
                raise
            await self._crashed(scope, receive, send_with_ids, exc)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self._count(method, path, status, elapsed)
            client = scope.get("client")
            ACCESS_LOG.emit(
                method,
                scope["path"],
                status,
                elapsed,
                request_id,
                traceparent[3:35] if traceparent else None,
                client[0] if client else None,
            )

    async def _crashed(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """The answer to an exception no handler took, sent as every other answer is."""
        response = await on_crash(Request(scope), exc)
        await response(scope, receive, send)

    async def _head_as_get(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HEAD as the GET of the same URL, sent without its body: the GET's status and headers,
        Content-Length included (RFC 9110 9.3.2). The app is given a copy of the scope saying
        GET (the server reads the method of its own to leave the body out as well); what the app
        leaves in the scope for this middleware (the route, the rate-limit fields) is copied back.
        The answer ends at the body's first part: a streamed body (an export) is stopped there
        (`_HeadAnswered`), not run to its end holding a pool connection."""
        as_get = {**scope, "method": "GET"}
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if ended:
                return
            if message["type"] == "http.response.start":
                limits = as_get.get(RATE_LIMIT_SCOPE_KEY)
                if limits:
                    scope[RATE_LIMIT_SCOPE_KEY] = limits
                await send(message)
                return
            # The body's first part ends the answer: one empty last part instead.
            ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if message.get("more_body", False):  # a stream (an export): stopped here, its rows unread
                raise _HeadAnswered

        try:
            await self.app(as_get, receive, headers_only)
        except _HeadAnswered:
            pass  # the stream's generator was closed on the way out (Download closes it, and its cursor)
        finally:
            if "route" in as_get:
                scope["route"] = as_get["route"]

    def _count(self, method: str, path: str, status: int, elapsed: float) -> None:
        children = self._children.get((method, path, status))
        if children is None:
            children = self._children[(method, path, status)] = (
                HTTP_REQUESTS.labels(method, path, str(status)),
                HTTP_LATENCY.labels(method, path, f"{status // 100}xx"),
            )
        children[0].inc()
        children[1].observe(elapsed)


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "service": "crm-service", "checks": {"database": "ok", "broker": "ok"}}]}
    )

    status: str
    service: str
    checks: dict[str, str] = {}


def ops_router(service: str) -> GatedRouter:
    router = GatedRouter(tags=["ops"], route_class=TypedRoute)

    @router.get(
        "/health",
        summary="Liveness",
        description="The process is up. Needs no key.",
        responses={200: {"content": {"application/json": {"example": {"status": "ok", "service": service, "checks": {}}}}}},
    )
    async def health() -> ModelResponse[Health]:
        return json_response(Health(status="ok", service=service))

    @router.get(
        "/ready",
        summary="Readiness",
        description="The database and the broker are reachable and the event consumers (where the process runs any) "
        "have joined their groups; 503 naming the failing check otherwise. Needs no key.",
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": {"status": "ok", "service": service, "checks": {"database": "ok", "broker": "ok"}}
                    }
                }
            },
            503: {
                "description": "A dependency is unreachable.",
                "content": {
                    "application/problem+json": {
                        "example": {
                            "type": "https://cx.example.org/problems/not-ready",
                            "title": "Not ready",
                            "status": 503,
                            "detail": "broker: unreachable",
                            "checks": {"database": "ok", "broker": "unreachable"},
                        }
                    }
                },
            },
        },
    )
    async def ready(request: Request) -> ModelResponse[Health] | JSONBytesResponse:
        checks = {"database": await _check_database(request), "broker": await _check_broker(request)}
        consumers = getattr(request.app.state, "consumers", [])
        if consumers:
            # Joined their groups and reading: events written now will be applied.
            checks["consumers"] = "ok" if all(c.assigned for c in consumers) else "joining"
        if all(v == "ok" for v in checks.values()):
            return json_response(Health(status="ok", service=service, checks=checks))
        return problem_response(
            503,
            "Not ready",
            slug="not-ready",
            detail=", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"),
            extra={"checks": checks},
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        description="Prometheus text format: HTTP requests and latency per route template, the outbox backlog and "
        "the age of its oldest unsent row, relay and consumer errors, consumer lag per partition, events handled, "
        "skipped as duplicates and sent to the DLQ. With several workers (`PROMETHEUS_MULTIPROC_DIR` set), every "
        "worker's figures added up. Needs no key.",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "text/plain": {
                        "example": 'outbox_backlog{service="crm-service"} 0.0\n'
                        'events_handled_total{consumer="x",type="customer.created"} 3.0'
                    }
                }
            }
        },
    )
    async def metrics() -> Response:
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    @router.get(
        "/asyncapi.yaml",
        summary="Event contract (AsyncAPI 3)",
        description="The Kafka topics, event types and their schemas, as an AsyncAPI 3 document. Needs no key.",
        response_class=Response,
        responses={
            200: {"content": {"application/yaml": {"example": "asyncapi: 3.0.0\ninfo:\n  title: CX platform events\n..."}}}
        },
    )
    async def asyncapi() -> Response:
        from cxkit.events.contract import render_asyncapi

        return Response(render_asyncapi(), media_type="application/yaml")

    @router.get(
        "/schemas/events/{event_type}.json",
        summary="JSON Schema of one event type",
        description="The whole CloudEvent (`data` included) as JSON Schema 2020-12, e.g. "
        "`/schemas/events/interaction.recorded.json`. Needs no key.",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "application/schema+json": {
                        "example": {
                            "$schema": "https://json-schema.org/draft/2020-12/schema",
                            "title": "interaction.recorded",
                            "type": "object",
                        }
                    }
                }
            },
            404: {"model": Problem, "description": "No such event type.", "content": {PROBLEM_MEDIA_TYPE: {}}},
        },
    )
    async def event_schema(event_type: str) -> Response:
        from cxkit.events.contract import render_schema
        from cxkit.events.registry import EVENT_TYPES

        if event_type not in EVENT_TYPES:
            raise NotFound(f"no event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
        return Response(render_schema(event_type), media_type="application/schema+json")

    return router


async def _check_database(request: Request) -> str:
    try:
        async with request.app.state.session_factory() as session:
            await asyncio.wait_for(session.execute(text("SELECT 1")), 2.0)
        return "ok"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


async def _check_broker(request: Request) -> str:
    servers = request.app.state.settings.kafka_bootstrap_servers.split(",")
    for server in servers:
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", int(port)), 1.0)
            writer.close()
            return "ok"
        except (OSError, TimeoutError, ValueError):
            continue
    return "unreachable"


def install_platform(app: FastAPI, service: str) -> None:
    """The middleware, the problem handlers, the ops routes and the docs pages served offline
    (create the app with `docs_url=None, redoc_url=None`). Reads `app.state.settings` (set it
    first) for the body cap and the origins allowed to call from browsers (CORS)."""
    settings = getattr(app.state, "settings", None)
    max_body_bytes = settings.max_body_bytes if settings is not None else DEFAULT_MAX_BODY_BYTES
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes)
    if settings is not None:  # added last: outermost
        install_cors(app, settings.cors_allow_origins, settings.cors_max_age_seconds)
    install_problem_handlers(app)
    document_problems_as_problem_json(app)
    keep_example_nulls(app)
    include_routers(app, [ops_router(service)])
    install_offline_docs(app)
