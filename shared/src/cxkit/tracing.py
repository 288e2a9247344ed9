"""Tracing with the OpenTelemetry SDK: one trace from an HTTP request through the outbox and
Kafka into the other service's consumer and database.

`configure_tracing` runs once per process, before the app is built:
- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set: spans go to
  that collector over OTLP/HTTP in batches (`OTEL_BSP_*`), sampled per `OTEL_TRACES_SAMPLER`
  (default: parent-based, always on), and SQLAlchemy, asyncpg and aiokafka are instrumented.
- Not set: nothing is recorded or exported. Requests still get a span context (FastAPI's own
  telemetry starts it, continuing an incoming `traceparent`), so log lines carry a trace id and
  events carry the `traceparent` of the request that caused them. That costs a few tens of
  microseconds per request; recording spans and instrumenting the clients would cost more, for
  spans nobody reads.
- `OTEL_SDK_DISABLED=true`: no tracing at all.

Tests pass their own exporter (`configure_tracing(..., exporter=InMemorySpanExporter())`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

T = TypeVar("T")
_PROPAGATOR = TraceContextTextMapPropagator()
_UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics"})


class _Tracing:
    provider: TracerProvider | None = None
    recording = False  # spans are recorded and exported, clients instrumented
    instrumented = False
    request_tracer: trace.Tracer | None = None


_state = _Tracing()


def _endpoint_configured() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def configure_tracing(service: str, *, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The process's tracer provider (made on the first call; later calls return it). None
    when `OTEL_SDK_DISABLED=true`."""
    if _state.provider is not None:
        return _state.provider
    if _disabled() and exporter is None:
        return None
    resource = Resource.create({"service.name": service})
    if exporter is not None:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _state.recording = True
    elif _endpoint_configured():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _state.recording = True
    else:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    _state.provider = provider
    trace.set_tracer_provider(provider)
    if _state.recording:
        _instrument_clients(provider)
    return provider


def _instrument_clients(provider: TracerProvider) -> None:
    """asyncpg (the pools the hot paths use) and aiokafka (producer spans, the context in the
    message headers): both patch their library once per process. SQLAlchemy is instrumented per
    engine (`instrument_engine`)."""
    if _state.instrumented:
        return
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    AIOKafkaInstrumentor().instrument(tracer_provider=provider)
    _state.instrumented = True


def instrument_engine(engine: Any) -> None:
    """Spans for the queries of a SQLAlchemy (async) engine, when spans are recorded."""
    if not _state.recording or _state.provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=_state.provider)


def recording() -> bool:
    """Whether spans are recorded (an exporter is configured)."""
    return _state.recording


def fastapi_telemetry(provider: TracerProvider | None) -> dict[str, Any]:
    """`FastAPI(telemetry=...)`: when spans are recorded, FastAPI's own OpenTelemetry server
    spans (with per-operation spans) from our provider; its metrics and logs stay off
    (Prometheus and structlog do those). Probes and scrapes are not traced. When spans are not
    recorded it stays off and `request_span` gives requests their (unrecorded) span: the same
    trace context for a third of the cost."""
    if provider is None or not _state.recording:
        return {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    return {
        "tracer_provider": provider,
        "tracing": True,
        "metrics": False,
        "logs": False,
        "operation_spans": True,
        "auto_configure": False,
        "exclude": _untraced,
    }


@contextlib.contextmanager
def request_span(incoming: str | None, path: str) -> Iterator[str | None]:
    """The request's span context: FastAPI's server span when spans are recorded (already
    current), else an unrecorded span of our own continuing the caller's `traceparent`. Yields
    its `traceparent` (None when tracing is disabled or the path is a probe)."""
    current = current_traceparent()
    if current is not None or _state.recording or _state.provider is None or path in _UNTRACED_PATHS:
        yield current
        return
    if _state.request_tracer is None:
        _state.request_tracer = _state.provider.get_tracer("cxkit.http")  # get_tracer makes a new one each call
    span = _state.request_tracer.start_span("request", context=context_of(incoming), kind=SpanKind.SERVER)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield current_traceparent()
    finally:
        otel_context.detach(token)


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in _UNTRACED_PATHS


def shutdown_tracing() -> None:
    """Flush spans still batched (at process exit)."""
    if _state.provider is not None and _state.recording:
        with contextlib.suppress(Exception):
            _state.provider.force_flush(timeout_millis=5000)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None outside any trace."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a valid `traceparent`, or None."""
    ctx = trace.get_current_span(context_of(traceparent)).get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


def context_of(traceparent: str | None) -> otel_context.Context:
    """The OTel context a stored or received `traceparent` stands for (empty if invalid)."""
    if not traceparent:
        return otel_context.Context()
    return _PROPAGATOR.extract({"traceparent": traceparent})


@contextlib.contextmanager
def attached(traceparent: str | None) -> Iterator[None]:
    """Make a stored `traceparent` the current context (the relay sends a row in its request's
    trace)."""
    token = otel_context.attach(context_of(traceparent))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def consuming(name: str, items: Sequence[T], traceparent_of: Callable[[T], str | None], **attributes: Any) -> Iterator[None]:
    """A CONSUMER span around applying a batch of events, when spans are recorded: a child of
    the first event's trace, linked to every other event's, so a single change's trace runs on
    into this service's database spans. Costs nothing when spans are not recorded."""
    if not _state.recording or _state.provider is None:
        yield
        return
    traceparents = [traceparent_of(item) for item in items]
    contexts = [trace.get_current_span(context_of(tp)).get_span_context() for tp in traceparents]
    first = contexts[0] if contexts and contexts[0].is_valid else None
    parent = context_of(traceparents[0]) if first is not None else otel_context.Context()
    linked = {(c.trace_id, c.span_id): c for c in contexts if c.is_valid and c != first}  # each other event's trace once
    links = [Link(c) for c in linked.values()]
    tracer = _state.provider.get_tracer("cxkit.kafka.consumer")
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes):
        yield
