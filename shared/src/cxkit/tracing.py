"""W3C trace context carried from HTTP requests through the outbox into Kafka and back."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_current: ContextVar[str | None] = ContextVar("traceparent", default=None)


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a valid header, or None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "0" * 32:
        return None
    return match.group(1), match.group(2)


def start_span(incoming: str | None) -> str:
    """Continue the incoming trace (or start one) with a new span; becomes the current context."""
    parsed = parse_traceparent(incoming)
    # Ids need to be unique, not secret: the fast PRNG, as OpenTelemetry's own id generator.
    trace_id = parsed[0] if parsed else f"{random.getrandbits(128):032x}"
    traceparent = f"00-{trace_id}-{random.getrandbits(64):016x}-01"
    _current.set(traceparent)
    return traceparent


def current_traceparent() -> str | None:
    return _current.get()


def trace_id_of(traceparent: str | None) -> str | None:
    parsed = parse_traceparent(traceparent)
    return parsed[0] if parsed else None
