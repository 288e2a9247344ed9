"""One trace across both services: CRM request -> outbox relay -> Kafka -> CEM consumer -> CEM
database, exported over OTLP/HTTP by the real processes to a collector this test runs."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cxkit.dev_broker import DevBroker
from cxkit.testing import live_server, wait_for

pytestmark = pytest.mark.e2e

SERVER, PRODUCER, CONSUMER = 2, 4, 5  # opentelemetry.proto Span.SpanKind values


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Collector:
    """An OTLP/HTTP (protobuf) trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/traces", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        received = []
        for resource_spans in message.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    received.append(
                        Span(
                            service=attrs.get("service.name", ""),
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: a.value.string_value or a.value.int_value for a in s.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(received)
        return Response(trace_service_pb2.ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    def of_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def descends_from(span: Span, ancestor: Span, spans: list[Span]) -> bool:
    by_id = {s.span_id: s for s in spans}
    current: Span | None = span
    while current is not None:
        if current.parent_id == ancestor.span_id:
            return True
        current = by_id.get(current.parent_id)
    return False


async def test_a_customer_made_on_the_crm_is_in_the_cem_view_within_5_s_in_one_trace_to_the_cem_database(
    stack_factory: Any, private_broker: DevBroker
) -> None:
    # A broker of its own: on the suite's shared one, the new consumer groups start with every
    # earlier test's events (and their dead letters), so the poll that applies this test's event
    # may be a span in another event's trace, and the services' span queues may overflow.
    collector = Collector()
    with live_server(collector.app) as collector_url:
        stack = stack_factory(private_broker.bootstrap)
        stack.extra_env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": collector_url, "OTEL_BSP_SCHEDULE_DELAY": "100"})
        stack.start()
        trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        async with stack.crm_client() as crm, stack.cem_client() as cem:
            r = await crm.post(
                "/v1/customers",
                json={
                    "email": f"traced-{uuid.uuid4().hex[:8]}@example.com",
                    "name": "Traced",
                    "company": "Acme",
                    "lifecycle_stage": "customer",
                },
                headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
            )
            assert r.status_code == 201, r.text
            assert r.headers["traceparent"].split("-")[1] == trace_id  # the answer names the trace
            customer_id = r.json()["id"]

            async def in_cem_view() -> dict[str, Any] | None:
                r = await cem.get(f"/v1/customers/{customer_id}/experience")
                return r.json() if r.status_code == 200 else None

            # The customer made on the CRM is in the CEM's view within 5 seconds, with what it was given.
            view = await wait_for(in_cem_view, timeout=5)
            assert view["customer"]["email"] == r.json()["email"]
            assert view["customer"]["company"] == "Acme" and view["customer"]["lifecycle_stage"] == "customer"
            assert view["customer"]["crm_version"] == 1

        async def whole_trace() -> list[Span] | None:
            # Each service exports in its own batches, so the CEM's spans may arrive before the CRM's
            # request span (which ends only after the answer is sent): wait for every part.
            spans = collector.of_trace(trace_id)
            requested = any(s.service == "crm-service" and s.kind == SERVER for s in spans)
            sent = any(s.service == "crm-service" and s.kind == PRODUCER for s in spans)
            applied = [s for s in spans if s.service == "cem-service" and s.kind == CONSUMER and s.name.endswith(" process")]
            written = applied and any(s.parent_id == applied[0].span_id for s in spans)
            return spans if requested and sent and written else None

        try:
            spans = await wait_for(whole_trace, timeout=15)
        except Exception:
            print(
                "\n".join(
                    f"{s.service} {s.name} kind={s.kind} {s.span_id}<-{s.parent_id} {s.attributes}"
                    for s in collector.of_trace(trace_id)
                )
            )
            raise
        finally:
            stack.stop()  # while the collector still answers, so the services' last export goes through
        spans = collector.of_trace(trace_id)  # with what the services flushed as they stopped

    request = next(s for s in spans if s.service == "crm-service" and s.kind == SERVER)
    assert request.parent_id == caller_span  # continues the caller's trace
    assert request.name.startswith("POST")
    crm_db = [s for s in spans if s.service == "crm-service" and s.attributes.get("db.system") == "postgresql"]
    assert any(descends_from(s, request, spans) for s in crm_db), "the CRM's INSERT belongs to the request"
    sent = [s for s in spans if s.service == "crm-service" and s.kind == PRODUCER]
    assert sent and all(s.attributes.get("messaging.destination.name") == "crm.customers.v1" for s in sent)
    consumed = [s for s in spans if s.service == "cem-service" and s.kind == CONSUMER and s.name.endswith(" process")]
    assert consumed, [(s.service, s.name, s.kind, s.span_id, s.parent_id) for s in spans if s.service == "cem-service"]
    assert consumed[0].parent_id in {s.span_id for s in sent}  # the CEM applies what the relay sent
    cem_db = [s for s in spans if s.service == "cem-service" and s.attributes.get("db.system") == "postgresql"]
    assert any(descends_from(s, consumed[0], spans) for s in cem_db), "the CEM's writes belong to the consumer's span"

    # Log lines carry the trace id: the CRM's access line for the request.
    lines = [json.loads(line) for line in (stack.logs / "crm.log").read_text().splitlines() if line.startswith("{")]
    assert any(line.get("trace_id") == trace_id and line.get("path") == "/v1/customers" for line in lines)
