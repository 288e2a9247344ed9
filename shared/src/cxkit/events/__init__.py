"""The event contract: CloudEvents envelope and typed payloads per topic."""

from cxkit.events.envelope import CloudEvent, InvalidEvent, decode_event, encode_event, new_event
from cxkit.events.registry import EVENT_TYPES, TOPICS, payload_model, topic_for

__all__ = [
    "EVENT_TYPES",
    "TOPICS",
    "CloudEvent",
    "InvalidEvent",
    "decode_event",
    "encode_event",
    "new_event",
    "payload_model",
    "topic_for",
]
