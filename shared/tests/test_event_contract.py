"""The published event contract (AsyncAPI 3 + JSON Schema per type) matches the models."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from cxkit.events import encode_event, new_event
from cxkit.events.contract import asyncapi_document, event_schema, expected_files, main, validation_errors
from cxkit.events.payloads import CustomerCreated, InteractionRecorded
from cxkit.events.registry import EVENT_TYPES, TOPICS, dlq_topic


def test_published_files_are_up_to_date_with_the_models() -> None:
    """Fails after a payload change until `python -m cxkit.events.contract --write` is run."""
    assert main([]) == 0, "run: .venv/bin/python -m cxkit.events.contract --write"
    assert len(expected_files()) == len(EVENT_TYPES) + 1


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_each_event_schema_is_valid_json_schema(event_type: str) -> None:
    Draft202012Validator.check_schema(event_schema(event_type))


def test_asyncapi_document_names_every_topic_dlq_and_event_type() -> None:
    doc = yaml.safe_load(yaml.safe_dump(asyncapi_document()))
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(TOPICS) | {dlq_topic(t) for t in TOPICS}
    assert {m["name"] for m in doc["components"]["messages"].values()} == set(EVENT_TYPES)
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in doc["channels"]
        for ref in op["messages"]:
            _, _, ch, _, msg = ref["$ref"].split("/")
            assert msg in doc["channels"][ch]["messages"]
    for message in doc["components"]["messages"].values():
        assert message["payload"]["$ref"].removeprefix("#/components/schemas/") in doc["components"]["schemas"]


def test_an_event_made_by_the_kit_conforms_and_a_broken_one_does_not() -> None:
    cid = uuid.uuid4()
    event = orjson.loads(
        encode_event(
            new_event("customer.created", source="urn:test", subject=str(cid), data=CustomerCreated(id=cid, email="a@b.c"))
        )
    )
    assert validation_errors(event) == []
    del event["data"]["id"]
    assert any("id" in e for e in validation_errors(event))
    event["type"] = "nope"
    assert validation_errors(event) == ["unknown event type 'nope'"]


def test_a_hand_written_outside_interaction_event_conforms() -> None:
    """What a point-of-sale system would publish, written without our code."""
    event = {
        "specversion": "1.0",
        "id": "pos-000123",
        "source": "urn:pos:store-17",
        "type": "interaction.recorded",
        "subject": "ada@example.com",
        "time": "2026-11-23T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "customer_email": "ada@example.com",
            "type": "purchase",
            "channel": "store",
            "touchpoint": "checkout",
            "occurred_at": "2026-11-23T09:59:00Z",
            "amount": 42.5,
            "currency": "EUR",
        },
    }
    assert validation_errors(event) == []
    InteractionRecorded.model_validate(event["data"])
    event["data"]["occurred_at"] = "yesterday"
    assert validation_errors(event)


def test_interaction_without_customer_is_refused_by_the_model() -> None:
    with pytest.raises(ValueError, match="customer_id or customer_email"):
        InteractionRecorded(type="call", occurred_at=dt.datetime.now(dt.UTC))
