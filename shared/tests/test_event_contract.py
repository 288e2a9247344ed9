"""The published event contract (AsyncAPI 3 + JSON Schema per type) matches the models."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from cxkit.events import InvalidEvent, decode_event, encode_event, new_event
from cxkit.events.contract import asyncapi_document, event_schema, expected_files, main, validation_errors
from cxkit.events.payloads import CustomerCreated, InteractionRecorded
from cxkit.events.registry import EVENT_TYPES, TOPICS, dlq_topic
from cxkit.kafka.consumer import EventDecoder


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


def _event(event_type: str, data: dict[str, object], **envelope: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": "e-1", "source": "urn:test", "type": event_type, "data": data, **envelope}


CUSTOMER = "01a25190-cb3e-77b3-96a0-568eaee93665"
REMINDED = {"invitation_id": CUSTOMER, "survey_id": CUSTOMER, "max_reminders": 3}
PURCHASE = {"customer_email": "ada@example.com", "type": "purchase", "occurred_at": "2026-11-23T09:59:00Z"}


@pytest.mark.parametrize(
    ("event", "accepted"),
    [
        (_event("customer.created", {"id": CUSTOMER, "version": 2**31 - 1, "open_deal_value": "9999999999999999.99"}), True),
        (_event("customer.created", {"id": CUSTOMER, "version": 2**31}), False),
        # A sum of open deals, each below 10^16: at most numeric(38, 2), as the services store it.
        (_event("customer.created", {"id": CUSTOMER, "open_deal_value": 1e16}), True),
        (_event("customer.created", {"id": CUSTOMER, "open_deal_value": "18000000000000000.00"}), True),
        (_event("customer.created", {"id": CUSTOMER, "open_deal_value": 1e36}), False),
        (_event("customer.created", {"id": CUSTOMER, "open_deal_value": "12,50"}), False),
        (_event("customer.created", {"id": CUSTOMER, "name": "n" * 201}), False),
        (_event("customer.created", {"id": CUSTOMER, "phone": "1\x002"}), False),
        (_event("customer.created", {"id": CUSTOMER}, id="i" * 255), True),
        (_event("customer.created", {"id": CUSTOMER}, id="i" * 256), False),
        (_event("customer.created", {"id": CUSTOMER}, source="urn:\x00"), False),
        (_event("interaction.recorded", {**PURCHASE, "amount": "-129.90"}), True),
        (_event("interaction.recorded", {**PURCHASE, "amount": 42.5}), True),
        (_event("interaction.recorded", {**PURCHASE, "amount": -1e16}), False),
        (_event("interaction.recorded", {**PURCHASE, "amount": "lots"}), False),
        (_event("interaction.recorded", {**PURCHASE, "customer_email": None, "customer_id": CUSTOMER}), True),
        (_event("interaction.recorded", {**PURCHASE, "customer_email": None}), False),
        (_event("interaction.recorded", {**PURCHASE, "customer_email": ""}), False),
        (_event("interaction.recorded", {**PURCHASE, "occurred_at": "8999-12-31T23:59:59.999Z"}), True),
        (_event("interaction.recorded", {**PURCHASE, "occurred_at": "9000-01-01T00:00:00Z"}), False),
        (_event("interaction.recorded", {**PURCHASE, "occurred_at": "9999-12-31T23:59:59-01:00"}), False),
        (_event("interaction.recorded", {**PURCHASE, "occurred_at": "0001-01-01T00:00:00Z"}), True),
        (_event("survey.reminded", {**REMINDED, "reminder": 2}), True),
        (_event("survey.reminded", {**REMINDED, "reminder": 2**40}), False),
    ],
)
def test_the_published_schema_and_the_consumers_decoder_agree_on_what_a_consumer_can_store(
    event: dict[str, object], accepted: bool
) -> None:
    """What the schema allows, every consumer decodes (and can store: an integer column, a
    `numeric(18, 2)`, the remembered event id, text without NUL); what it refuses goes to the DLQ
    as it is decoded, with the field, never to a failing statement."""
    assert (validation_errors(event) == []) is accepted, validation_errors(event)
    raw = orjson.dumps(event)
    if accepted:
        decode_event(raw)
        EventDecoder([str(event["type"])]).decode(raw)
    else:
        with pytest.raises(InvalidEvent):
            decode_event(raw)
        with pytest.raises(InvalidEvent):
            EventDecoder([str(event["type"])]).decode(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"customer_email": "not an address"}, "customer_email: Value error, not an email address: "),
        ({"customer_email": "   "}, "customer_email: Value error, blank: an email address is required without customer_id"),
        ({"occurred_at": "8999-12-31T23:00:00-05:00"}, "occurred_at: Input should be at 0001-01-01T00:00:00Z or later"),
        ({"occurred_at": "0001-01-01T00:30:00+01:00"}, "occurred_at: Input should be at 0001-01-01T00:00:00Z or later"),
    ],
)
def test_what_the_schema_describes_but_cannot_check_is_refused_as_the_event_is_decoded(
    data: dict[str, object], reason: str
) -> None:
    """The address that finds the customer, and a time an offset moves out of the range: both
    services' consumers decode with the same model, so one never applies what the other refuses
    (the CRM refused an address that is not one and the CEM kept it; the CEM refused times from
    9000 on that the CRM stored)."""
    event = _event("interaction.recorded", {**PURCHASE, **data})
    assert validation_errors(event) == []
    raw = orjson.dumps(event)
    for decode in (decode_event, EventDecoder(["interaction.recorded"]).decode):
        with pytest.raises(InvalidEvent) as refused:
            decode(raw)
        assert refused.value.reason.startswith(f"invalid interaction.recorded data: {reason}"), refused.value.reason
    # With a customer_id, the address is not what finds the customer, and is not judged.
    with_id = _event("interaction.recorded", {**PURCHASE, "customer_id": CUSTOMER, "customer_email": "not an address"})
    decode_event(orjson.dumps(with_id))


def _nested(value: object, depth: int) -> object:
    for _ in range(depth):
        value = {"k": value}
    return value


def test_a_nul_anywhere_in_an_event_is_refused_with_where_it_is() -> None:
    """Also where the schema cannot say it (a key of free JSON, an unknown field): no consumer's
    database stores a NUL. A backslash followed by `u0000` is text, not a NUL."""
    cases = [
        ("data.metadata", {"metadata": {"k\x00": 1}}),
        ("data.metadata.tags.1", {"metadata": {"tags": ["a", "b\x00"]}}),
        ("data.note", {"note": "unknown field \x00"}),
        (".".join(["data.metadata", *["k"] * 30]), {"metadata": _nested("\x00", 30)}),  # any depth
    ]
    for where, fields in cases:
        raw = orjson.dumps(_event("interaction.recorded", {**PURCHASE, **fields}))
        for decode in (decode_event, EventDecoder(["interaction.recorded"]).decode):
            with pytest.raises(InvalidEvent) as refused:
                decode(raw)
            assert refused.value.reason == f"invalid interaction.recorded event: {where}: text must not contain NUL characters"
    _, payload = decode_event(orjson.dumps(_event("interaction.recorded", {**PURCHASE, "summary": "a \\u0000 b"})))
    assert payload.summary == "a \\u0000 b"  # type: ignore[attr-defined]
