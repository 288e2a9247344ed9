"""The published event contract, generated from the payload models: one JSON Schema per
event type (the whole CloudEvent, `data` included) and an AsyncAPI 3 document.

`python -m cxkit.events.contract --write` rewrites shared/schemas/*.json and
shared/asyncapi.yaml; a test fails when they drift from the models."""

from __future__ import annotations

import argparse
import copy
import functools
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from cxkit.events.envelope import EVENT_ID_MAX_LENGTH
from cxkit.events.registry import CEM_FEEDBACK, CRM_CUSTOMERS, CX_INTERACTIONS, EVENT_TYPES, TOPICS, dlq_topic
from cxkit.fields import NO_NUL, forbid_nul

SCHEMA_BASE = "https://cx.example.org/schemas/events/"
SHARED_DIR = Path(__file__).resolve().parents[3]  # shared/
VERSION = "1.0.0"

TOPIC_INFO = {
    CRM_CUSTOMERS: ("crm-service", ["cem-service"], "Customer lifecycle as the CRM owns it."),
    CX_INTERACTIONS: ("crm-service and any other system", ["crm-service", "cem-service"], "Interactions from every channel."),
    CEM_FEEDBACK: ("cem-service", ["crm-service"], "Survey invitations, answers, feedback and follow-up requests."),
}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace local `$defs` references by their definitions (our payloads have no cycles),
    so each schema stands alone inside the AsyncAPI document too."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = copy.deepcopy(defs[ref.removeprefix("#/$defs/")])
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**target, **rest})
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


@functools.cache
def event_schema(event_type: str) -> dict[str, Any]:
    """JSON Schema (2020-12) of a whole `event_type` CloudEvent in structured JSON mode."""
    topic, model = EVENT_TYPES[event_type]
    data = _inline_refs(model.model_json_schema(mode="validation"))
    data.pop("title", None)
    forbid_nul(data)  # as the consumers refuse it (`cxkit.events.envelope.refuse_nul`)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}{event_type}.json",
        "title": event_type,
        "description": (model.__doc__ or event_type).strip().splitlines()[0] + f" Topic `{topic}`.",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": EVENT_ID_MAX_LENGTH,
                "pattern": NO_NUL,
                "description": "Unique per event; consumers deduplicate on it.",
            },
            "source": {
                "type": "string",
                "minLength": 1,
                "pattern": NO_NUL,
                "description": "URI of the producer, e.g. urn:cx:crm-service.",
            },
            "type": {"const": event_type},
            "subject": {"type": "string", "pattern": NO_NUL, "description": "The customer id (also the Kafka message key)."},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "dataschema": {"type": "string", "pattern": NO_NUL},
            "traceparent": {
                "type": "string",
                "pattern": NO_NUL,
                "description": "W3C trace context of the change that caused the event.",
            },
            "data": data,
        },
        "additionalProperties": True,
    }


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for event_type, (_topic, model) in EVENT_TYPES.items():
        name = event_type.replace(".", "_")
        schemas[name] = event_schema(event_type)
        messages[name] = {
            "name": event_type,
            "title": event_type,
            "summary": (model.__doc__ or event_type).strip().splitlines()[0],
            "contentType": "application/cloudevents+json",
            "headers": {
                "type": "object",
                "properties": {
                    "content-type": {"const": "application/cloudevents+json"},
                    "ce_type": {"const": event_type},
                    "traceparent": {"type": "string"},
                },
            },
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {"kafka": {"key": {"type": "string", "description": "The customer id."}, "bindingVersion": "0.5.0"}},
        }
    for topic in TOPICS:
        producer, consumers, description = TOPIC_INFO[topic]
        channel_id = topic.replace(".", "_")
        types = [t for t, (tp, _) in EVENT_TYPES.items() if tp == topic]
        channels[channel_id] = {
            "address": topic,
            "description": f"{description} Written by {producer}; read by {', '.join(consumers)}. "
            "Key: the customer id, so one customer's events stay in order.",
            "messages": {t.replace(".", "_"): {"$ref": f"#/components/messages/{t.replace('.', '_')}"} for t in types},
        }
        channels[f"{channel_id}_dlq"] = {
            "address": dlq_topic(topic),
            "description": f"Messages of `{topic}` a consumer could not parse, validate or apply: the original bytes, "
            "key and headers, plus `dlq.reason`, `dlq.original_topic`, `dlq.original_partition`, "
            "`dlq.original_offset` and `dlq.consumer` headers. `crm dlq redrive` / `cem dlq redrive` send the events "
            f"not applied since back to `{topic}`, with a `dlq.redriven_from` header naming the dead letter "
            "(`<dlq topic>/<partition>/<offset>`); consumers skip an event id they applied already.",
        }
        refs = [{"$ref": f"#/channels/{channel_id}/messages/{t.replace('.', '_')}"} for t in types]
        operations[f"send_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"{producer} publishes to {topic} (through its transactional outbox).",
            "messages": refs,
        }
        operations[f"receive_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"{', '.join(consumers)} consume {topic} idempotently (per event id) "
            "and commit offsets after their DB commit.",
            "messages": refs,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CX platform events",
            "version": VERSION,
            "description": "Events between crm-service and cem-service (and outside systems): CloudEvents 1.0 in "
            "JSON structured mode. Within a version only additive changes; consumers ignore unknown fields. "
            "No text anywhere in an event (unknown fields and the keys of free JSON included) may hold a NUL character, "
            "which PostgreSQL cannot store: a consumer sends such an event to the topic's DLQ.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "production": {"host": "kafka:9092", "protocol": "kafka", "description": "Apache Kafka (KRaft)."},
            "development": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "The `make run` broker."},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


@functools.cache
def render_asyncapi() -> str:
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, width=120, allow_unicode=True)


@functools.cache
def render_schema(event_type: str) -> bytes:
    return orjson.dumps(event_schema(event_type), option=orjson.OPT_INDENT_2) + b"\n"


def expected_files() -> dict[Path, bytes]:
    files = {SHARED_DIR / "asyncapi.yaml": render_asyncapi().encode()}
    for event_type in EVENT_TYPES:
        files[SHARED_DIR / "schemas" / f"{event_type}.json"] = render_schema(event_type)
    return files


@functools.cache
def _validator(event_type: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(event_schema(event_type), format_checker=Draft202012Validator.FORMAT_CHECKER)


def validation_errors(event: dict[str, Any]) -> list[str]:
    """Why `event` (a decoded CloudEvent) breaks its published schema; empty when it conforms."""
    event_type = event.get("type")
    if event_type not in EVENT_TYPES:
        return [f"unknown event type {event_type!r}"]
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in _validator(event_type).iter_errors(event)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the published files")
    args = parser.parse_args(argv)
    stale = []
    for path, content in expected_files().items():
        if not path.exists() or path.read_bytes() != content:
            stale.append(path)
            if args.write:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
    for path in stale:
        print(("wrote " if args.write else "stale: ") + str(path))
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
