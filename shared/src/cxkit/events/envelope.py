"""CloudEvents 1.0 in JSON structured mode: the whole event is the Kafka message value."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxkit.fields import NUL_REFUSED, TimestampAsSent, nul_at
from cxkit.ids import new_id
from cxkit.tracing import current_traceparent


class InvalidEvent(Exception):
    """A message that is not a valid event of a known type; the reason goes to the DLQ header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The longest event id a consumer remembers (`processed_events.event_id`); a longer one is refused
# as the event is decoded.
EVENT_ID_MAX_LENGTH = 255


class CloudEvent(BaseModel):
    """The envelope. Unknown extension attributes are kept (CloudEvents allows them)."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=EVENT_ID_MAX_LENGTH)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = None
    time: TimestampAsSent | None = None
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    traceparent: str | None = None
    data: Any = None


def new_event(
    event_type: str, *, source: str, subject: str | None, data: BaseModel, event_id: uuid.UUID | None = None
) -> CloudEvent:
    """A new event carrying the current trace context, so the trace follows it through Kafka."""
    return CloudEvent(
        id=str(event_id or new_id()),
        source=source,
        type=event_type,
        subject=subject,
        time=dt.datetime.now(dt.UTC),
        traceparent=current_traceparent(),
        data=data.model_dump(mode="json"),
    )


def encode_event(event: CloudEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def decode_event(raw: bytes | None) -> tuple[CloudEvent, BaseModel]:
    """Parse and validate a message value; raises InvalidEvent with a readable reason."""
    from cxkit.events.registry import payload_model

    if raw is None:
        raise InvalidEvent("empty message value")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent("not a JSON object")
    try:
        event = CloudEvent.model_validate(doc)
    except ValidationError as exc:
        raise InvalidEvent(f"not a CloudEvent: {_short(exc)}") from None
    model = payload_model(event.type)
    if model is None:
        raise InvalidEvent(f"unknown event type {event.type!r}")
    try:
        payload = model.model_validate(event.data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {event.type} data: {_short(exc)}") from None
    refuse_nul(raw, doc)
    return event, payload


def refuse_nul(raw: bytes, doc: dict[str, Any]) -> None:
    """Raise InvalidEvent if some text of the parsed event `doc` (a value or a key, anywhere,
    unknown fields included) holds a NUL character: PostgreSQL stores none in text or JSONB, so
    no consumer could apply the event, and its first statement would fail (the whole poll with
    it). JSON carries a NUL only as the escape `\\u0000`, so a message without that sequence is
    not walked."""
    if b"\\u0000" not in raw:
        return
    at = nul_at(doc)
    if at is not None:
        where = ".".join(str(part) for part in at) or "(root)"
        raise InvalidEvent(f"invalid {doc.get('type')} event: {where}: text {NUL_REFUSED}")


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
