"""cxkit.tracing: FastAPI's server spans with our provider, the trace in answers, logs and
events, and the consumer's span continuing a producer's trace."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from cxkit import tracing
from cxkit.http.app import install_platform

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


def app_with(provider: TracerProvider) -> FastAPI:
    app = FastAPI(telemetry=tracing.fastapi_telemetry(provider), docs_url=None, redoc_url=None)
    install_platform(app, "trace-test")

    @app.get("/v1/things/{thing}")
    async def thing(thing: str) -> dict[str, str | None]:
        logging.getLogger("trace-test").info("inside")
        return {"traceparent": tracing.current_traceparent()}

    return app


async def call(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get(path, headers=headers)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """Spans recorded into memory, as with an OTLP endpoint configured."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing._state, "provider", provider)
    monkeypatch.setattr(tracing._state, "recording", True)
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def unrecorded(monkeypatch: pytest.MonkeyPatch) -> TracerProvider:
    """No exporter configured: spans exist but are not recorded."""
    provider = TracerProvider(sampler=ALWAYS_OFF)
    monkeypatch.setattr(tracing._state, "provider", provider)
    monkeypatch.setattr(tracing._state, "recording", False)
    monkeypatch.setattr(tracing._state, "request_tracer", None)
    return provider


async def test_a_request_continues_the_callers_trace_in_its_span_and_its_answer(exported: tuple) -> None:
    provider, exporter = exported
    r = await call(app_with(provider), "/v1/things/1", traceparent=INCOMING)
    assert r.status_code == 200
    inside = r.json()["traceparent"]
    assert inside.split("-")[1] == INCOMING_TRACE  # the handler runs in the caller's trace
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert f"{server.context.trace_id:032x}" == INCOMING_TRACE and f"{server.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert server.attributes["http.route"] == "/v1/things/{thing}" and server.attributes["http.response.status_code"] == 200
    assert r.headers["traceparent"].split("-")[2] == f"{server.context.span_id:016x}"  # the answer names the request's span
    handler = next(s for s in spans if f"{s.context.span_id:016x}" == inside.split("-")[2])
    assert handler.parent.span_id == server.context.span_id  # FastAPI's operation span, under the server span


async def test_without_an_exporter_nothing_is_recorded_but_requests_still_have_a_trace(unrecorded: TracerProvider) -> None:
    provider = unrecorded
    assert tracing.fastapi_telemetry(provider)["tracing"] is False  # the middleware's own span instead
    first = await call(app_with(provider), "/v1/things/1")
    second = await call(app_with(provider), "/v1/things/2", traceparent=INCOMING)
    assert int(first.headers["traceparent"][-2:], 16) & 1 == 0  # a trace of its own, not sampled
    assert second.headers["traceparent"].split("-")[1] == INCOMING_TRACE
    assert first.headers["traceparent"].split("-")[1] != second.headers["traceparent"].split("-")[1]


async def test_probes_are_not_traced(exported: tuple) -> None:
    provider, exporter = exported
    r = await call(app_with(provider), "/health")
    assert r.status_code == 200 and "traceparent" not in r.headers
    assert exporter.get_finished_spans() == ()


def test_trace_ids_of_stored_traceparents() -> None:
    assert tracing.trace_id_of(INCOMING) == INCOMING_TRACE
    assert tracing.trace_id_of("garbage") is None and tracing.trace_id_of(None) is None
    assert tracing.trace_id_of("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert tracing.current_traceparent() is None  # outside any span


def test_the_consumers_span_is_a_child_of_the_first_event_and_links_the_others(exported: tuple) -> None:
    _, exporter = exported
    other = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    seen = []
    with tracing.consuming(
        "group process", [INCOMING, None, other, INCOMING], lambda tp: tp, **{"messaging.batch.message_count": 4}
    ):
        seen.append(tracing.current_traceparent())
    (span,) = exporter.get_finished_spans()
    assert span.kind == SpanKind.CONSUMER and span.name == "group process"
    assert f"{span.context.trace_id:032x}" == INCOMING_TRACE and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert [f"{link.context.trace_id:032x}" for link in span.links] == ["1" * 32]  # each other trace once
    assert seen[0].split("-")[2] == f"{span.context.span_id:016x}"  # the database spans hang under it


def test_the_consumer_adds_nothing_when_spans_are_not_recorded(unrecorded: TracerProvider) -> None:
    touched = []
    with tracing.consuming("group process", [INCOMING], touched.append):
        assert trace.get_current_span().get_span_context().is_valid is False
    assert touched == []  # not even asked for the events' traces


def test_events_made_in_a_request_carry_its_trace() -> None:
    from cxkit.events import new_event
    from cxkit.events.payloads import CustomerCreated

    provider = TracerProvider(sampler=ALWAYS_OFF)
    request = contextvars.copy_context()

    def in_request() -> tuple[str | None, str | None]:
        with provider.get_tracer("t").start_as_current_span("request", context=tracing.context_of(INCOMING)):
            import uuid

            made = new_event("customer.created", source="s", subject="x", data=CustomerCreated(id=uuid.uuid4()))
            return made.traceparent, tracing.current_traceparent()

    carried, current = request.run(in_request)
    assert carried == current and carried.split("-")[1] == INCOMING_TRACE
