"""The CloudEvents envelope (cxkit.events.envelope): what the kit encodes decodes to the same event
and payload, with the trace context; additive changes pass (unknown data fields ignored,
extension attributes kept); malformed envelopes are refused with a reason; and the consumer's
one-pass decoder (cxkit.kafka.consumer.EventDecoder) accepts and refuses exactly the same
messages, for the same reasons."""

from __future__ import annotations

import contextvars
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from cxkit.events import EVENT_TYPES, InvalidEvent, decode_event, encode_event, new_event
from cxkit.events import payloads as p
from cxkit.events.contract import validation_errors
from cxkit.kafka.consumer import EventDecoder
from cxkit.testing import enter_request_span

from .conftest import SOURCE

CID = uuid.UUID("6f1c0c9e-3b0a-4d5e-9f00-000000000001")
AT = dt.datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=dt.UTC)

PAYLOADS: dict[str, BaseModel] = {
    "customer.created": p.CustomerCreated(
        id=CID, email="ada@example.com", name="Ada", tags=["vip"], open_deal_value=Decimal("1234.50")
    ),
    "interaction.recorded": p.InteractionRecorded(
        customer_id=CID, type="purchase", occurred_at=AT, amount=Decimal("42.5"), currency="EUR", metadata={"basket": [1, 2]}
    ),
    "survey.response.submitted": p.SurveyResponseSubmitted(
        response_id=uuid.uuid4(),
        survey_id=uuid.uuid4(),
        survey_kind="nps",
        customer_id=CID,
        score=3,
        comment="late ✈",
        submitted_at=AT,
    ),
}


def doc(**changes: Any) -> dict[str, Any]:
    """A valid `customer.created` event as a JSON document, with `changes` (None removes a key)."""
    base: dict[str, Any] = orjson.loads(
        encode_event(new_event("customer.created", source=SOURCE, subject=str(CID), data=PAYLOADS["customer.created"]))
    )
    for name, value in changes.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


@pytest.mark.parametrize("event_type", list(PAYLOADS))
def test_an_event_decodes_to_what_was_encoded_with_its_trace(event_type: str) -> None:
    request = contextvars.copy_context()  # as a request's span would be (and not leak into other tests)
    traceparent = request.run(enter_request_span)
    data = PAYLOADS[event_type]
    made = request.run(new_event, event_type, source=SOURCE, subject=str(CID), data=data, event_id=uuid.uuid4())
    event, payload = decode_event(encode_event(made))
    assert payload == data
    assert (event.id, event.source, event.type, event.subject) == (made.id, SOURCE, event_type, str(CID))
    assert event.time == made.time and event.time is not None and event.time.tzinfo is not None
    assert event.traceparent == traceparent  # the trace goes on in the consumer
    assert encode_event(event) == encode_event(made)


def test_unknown_data_fields_are_ignored_and_extension_attributes_kept() -> None:
    raw = orjson.dumps(doc(partitionkey="eu-1", data={"id": str(CID), "name": "Ada", "loyalty_tier": "gold"}))
    event, payload = decode_event(raw)
    assert payload == p.CustomerCreated(id=CID, name="Ada")  # a field added later by the producer: ignored
    assert event.model_extra == {"partitionkey": "eu-1"}
    assert orjson.loads(encode_event(event))["partitionkey"] == "eu-1"  # passed on when re-encoded


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "no id": (doc(id=None), "not a CloudEvent: id: Field required"),
    "empty id": (doc(id=""), "not a CloudEvent: id: String should have at least 1 character"),
    "numeric id": (doc(id=7), "not a CloudEvent: id: Input should be a valid string"),
    "no source": (doc(source=None), "not a CloudEvent: source: Field required"),
    "no type": (doc(type=None), "not a CloudEvent: type: Field required"),
    # Not text, and not hashable either: the consumer's decoder looks the type up before validating.
    "type a list": (doc(type=["customer.created"]), "not a CloudEvent: type: Input should be a valid string"),
    "type an empty list": (doc(type=[]), "not a CloudEvent: type: Input should be a valid string"),
    "type an object": (doc(type={}), "not a CloudEvent: type: Input should be a valid string"),
    "type a number": (doc(type=7), "not a CloudEvent: type: Input should be a valid string"),
    "id an object": (doc(id={"id": str(CID)}), "not a CloudEvent: id: Input should be a valid string"),
    "source a list": (doc(source=[SOURCE]), "not a CloudEvent: source: Input should be a valid string"),
    "subject an object": (doc(subject={}), "not a CloudEvent: subject: Input should be a valid string"),
    "datacontenttype a list": (doc(datacontenttype=[]), "not a CloudEvent: datacontenttype: Input should be a valid string"),
    "specversion a list": (doc(specversion=["1.0"]), "not a CloudEvent: specversion: Input should be '1.0'"),
    "specversion 2.0": (doc(specversion="2.0"), "not a CloudEvent: specversion:"),
    "time not a time": (doc(time="yesterday"), "not a CloudEvent: time:"),
    "unknown type": (doc(type="customer.created.v9"), "unknown event type 'customer.created.v9'"),
    "no data": (doc(data=None), "invalid customer.created data: (root): Input should be a valid dictionary"),
    "data not an object": (doc(data=[str(CID)]), "invalid customer.created data: (root): Input should be a valid dictionary"),
    "data id not a uuid": (doc(data={"id": "nope"}), "invalid customer.created data: id: Input should be a valid UUID"),
    "interaction without customer": (
        doc(type="interaction.recorded", data={"type": "call", "occurred_at": "2026-11-23T10:00:00Z"}),
        "invalid interaction.recorded data: (root): Value error, customer_id or customer_email is required",
    ),
    "interaction at a naive time": (
        doc(type="interaction.recorded", data={"customer_id": str(CID), "type": "call", "occurred_at": "2026-11-23T10:00:00"}),
        "invalid interaction.recorded data: occurred_at: Input should be an RFC 3339 time with an offset",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_envelope_is_refused_with_its_reason(case: str) -> None:
    document, reason = MALFORMED[case]
    with pytest.raises(InvalidEvent) as info:
        decode_event(orjson.dumps(document))
    assert info.value.reason.startswith(reason), info.value.reason


# Times the published contract (JSON Schema `format: date-time`, i.e. RFC 3339, as CloudEvents 1.0
# requires) refuses: without an offset, a bare date, a Unix timestamp.
OFF_CONTRACT_TIMES: dict[str, tuple[dict[str, Any], str]] = {
    "envelope time without an offset": (doc(time="2026-11-23T10:00:00"), "not a CloudEvent: time: "),
    "envelope time a bare date": (doc(time="2026-11-23"), "not a CloudEvent: time: "),
    "envelope time a unix timestamp": (doc(time=1_763_892_000), "not a CloudEvent: time: "),
    "payload time without an offset": (
        doc(type="customer.erased", data={"customer_id": str(CID), "erased_at": "2026-11-23T10:00:00"}),
        "invalid customer.erased data: erased_at: ",
    ),
}


@pytest.mark.parametrize("case", list(OFF_CONTRACT_TIMES))
def test_a_time_the_contract_refuses_is_refused_when_decoded(case: str) -> None:
    document, field = OFF_CONTRACT_TIMES[case]
    assert validation_errors(document), "the published contract accepts it: not a case of this test"
    raw = orjson.dumps(document)
    for decode in (decode_event, EventDecoder(EVENT_TYPES).decode):
        with pytest.raises(InvalidEvent) as info:
            decode(raw)
        assert info.value.reason.startswith(field), info.value.reason
        assert "an RFC 3339 time with an offset" in info.value.reason, info.value.reason


# Around the edges of RFC 3339 (the published schema's `date-time`) and of what pydantic reads as a time.
TIMES: list[Any] = [
    "2026-11-23T10:00:00Z",
    "2026-11-23t10:00:00.5z",
    "2026-11-23T10:00:00.1234567890+05:30",
    "2026-11-23T10:00:00-00:00",
    "9999-12-31T23:59:59-01:00",
    "2024-02-29T10:00:00Z",
    "2026-02-29T10:00:00Z",
    "2026-11-23 10:00:00Z",
    "2026-11-23T10:00Z",
    "2026-11-23T10:00:00+0100",
    "2026-11-23T10:00:00,5Z",
    "2026-11-23T24:00:00Z",
    "2026-11-23T23:59:60Z",
    "2026-11-23T10:00:00+24:00",
    "0000-01-01T00:00:00Z",
    "1763892000",
    1_763_892_000.5,
    True,
]


@pytest.mark.parametrize("time", TIMES, ids=str)
def test_decoding_accepts_exactly_the_times_the_contract_accepts(time: Any) -> None:
    envelope = doc(time=time)
    payload = doc(type="interaction.recorded", data={"customer_id": str(CID), "type": "call", "occurred_at": time})
    for document in (envelope, payload):
        refused_by_contract = bool(validation_errors(document))
        for decode in (decode_event, EventDecoder(EVENT_TYPES).decode):
            assert outcome(decode, orjson.dumps(document))[0] == ("refused" if refused_by_contract else "accepted")
    if not validation_errors(envelope) and not validation_errors(payload):  # and what is accepted is an aware time
        event, _ = decode_event(orjson.dumps(envelope))
        _, data = decode_event(orjson.dumps(payload))
        assert event.time is not None and event.time.tzinfo is not None
        assert event.time == data.occurred_at  # type: ignore[attr-defined]


def outcome(decode: Any, raw: bytes | None) -> tuple[str, Any]:
    try:
        event, payload = decode(raw)
    except InvalidEvent as exc:
        return "refused", exc.reason
    return "accepted", (event.model_dump(exclude={"data"}), payload)


def test_the_consumers_decoder_agrees_with_decode_event_on_every_message() -> None:
    messages: list[bytes | None] = [None, b"", b"{", b"[]", b'"event"', orjson.dumps(doc(data={"id": str(CID), "version": "3"}))]
    messages += [orjson.dumps(document) for document, _ in MALFORMED.values()]
    messages += [orjson.dumps(document) for document, _ in OFF_CONTRACT_TIMES.values()]
    messages += [encode_event(new_event(t, source=SOURCE, subject=str(CID), data=d)) for t, d in PAYLOADS.items()]
    decoder = EventDecoder(EVENT_TYPES)
    outcomes = [(outcome(decoder.decode, m), outcome(decode_event, m)) for m in messages]
    assert [one == other for one, other in outcomes] == [True] * len(messages), outcomes
    assert sum(one[0] == "accepted" for one, _ in outcomes) == len(PAYLOADS) + 1
