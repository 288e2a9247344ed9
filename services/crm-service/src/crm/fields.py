"""Input field types of the CRM's own domain, so bad input is a 422 and never a 500: free JSON
(orjson refuses integers beyond 64 bits), money and probabilities (a fixed precision), and the
example id of each resource. What both services share (no NUL characters, the input and PATCH
bases) is in `cxkit.fields`; the path id and `If-Match` in `cxkit.http.params`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BeforeValidator, Field, GetJsonSchemaHandler, TypeAdapter, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypeAliasType

from cxkit.fields import MAX_JSON_BYTES, NO_NUL
from cxkit.http.params import id_path

# The numbers free JSON may hold: orjson (and so the JSONB column) takes integers of 64 bits; the
# bound is 10**18, within that and exact as a double, so a validator that compares numbers as
# doubles draws the line where this one does. A float as large is refused too: JSON Schema
# cannot tell 1e30 from 10**30.
JSON_NUMBER_MIN, JSON_NUMBER_MAX = -(10**18), 10**18


def _number_out_of_range(value: Any) -> bool:
    """Whether a number anywhere in `value`, however deep, is outside the bounds (NaN and the
    infinities are: orjson would write them as null). Walked with a list of its own, so no depth
    is left unchecked and no depth the JSON parser lets through exhausts Python's stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and not JSON_NUMBER_MIN <= item <= JSON_NUMBER_MAX:
            return True
    return False


def bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    """Free JSON that fits a row: serialisable, numbers within ±10**18, at most 16 KiB."""
    if _number_out_of_range(value):
        raise ValueError(f"not storable as JSON: a number outside {JSON_NUMBER_MIN}..{JSON_NUMBER_MAX}")
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"not storable as JSON: {exc}") from None
    if size > MAX_JSON_BYTES:
        raise ValueError(f"at most {MAX_JSON_BYTES} bytes of JSON")
    return value


def decimal_text(pattern: str, example: str) -> Callable[[Any], Any]:
    """A decimal sent as a string must be written plainly (`12500.00`): no exponent, spaces,
    underscores or sign that Python's Decimal would also take, so the documented pattern is
    exactly what is accepted."""
    written = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, str) and not written.fullmatch(value):
            raise ValueError(f"a decimal written like {example}")
        return value

    return check


def decimal_input_schema(number: dict[str, Any], pattern: str, example: str) -> WithJsonSchema:
    """The request-side schema of a decimal: a JSON number or a plain decimal string."""
    return WithJsonSchema(
        {"anyOf": [{"type": "number", **number}, {"type": "string", "pattern": pattern}], "examples": [example]},
        mode="validation",
    )


def _keys_by_name(schema: dict[str, Any]) -> None:
    # pydantic writes dict[_Text, V] as patternProperties, which leaves keys that miss the pattern
    # unconstrained; say instead that every key matches and every value is a V.
    patterns = schema.pop("patternProperties", None)
    if patterns:
        ((pattern, values),) = patterns.items()
        schema["propertyNames"] = {"pattern": pattern}
        schema["additionalProperties"] = values


class _KeysByName:
    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        _keys_by_name(json_schema)
        return json_schema


class _DocumentedAs:
    """Document a field (request side) as another type whose JSON Schema says more than its
    validator's, while the validation stays the cheap one."""

    def __init__(self, documented: Any) -> None:
        self.documented = documented

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        if handler.mode != "validation":
            return handler(core_schema)
        return handler(TypeAdapter(self.documented).core_schema)


# What free JSON may hold, for the OpenAPI document (bounded_json and InputModel enforce it).
_Int64 = Annotated[int, Field(ge=JSON_NUMBER_MIN, le=JSON_NUMBER_MAX)]
# Every float past 2**53 is a whole number, so the integer branch covers those (exactly).
_Number = Annotated[float, Field(ge=-(2**53), le=2**53)]
_Text = Annotated[str, Field(pattern=NO_NUL)]
_JsonObject = Annotated[dict[_Text, "JsonValue"], _KeysByName()]
JsonValue = TypeAliasType("JsonValue", "bool | _Int64 | _Number | _Text | list[JsonValue] | _JsonObject | None")  # type: ignore[misc]


FreeJSON = Annotated[dict[str, Any], AfterValidator(bounded_json), _DocumentedAs(_JsonObject)]
# numeric(18, 2): at most 16 digits before the point and 2 after.
MONEY_TEXT = r"^[0-9]{1,16}(\.[0-9]{1,2})?$"
CENT = Decimal("0.01")


def in_cents(value: Decimal) -> Decimal:
    """An amount as its `numeric(18, 2)` column holds it: `100` and `19.9` are `100.00` and
    `19.90` (exactly: at most two decimals were accepted), and `-0.0` is `0.00`. Done once, at
    validation, so the answer to a write, its stored replay, its event and a later read agree."""
    return abs(value).quantize(CENT)


Money = Annotated[
    Decimal,
    BeforeValidator(decimal_text(MONEY_TEXT, "12500.00")),
    Field(ge=0, max_digits=18, decimal_places=2),
    AfterValidator(in_cents),
    decimal_input_schema({"minimum": 0, "exclusiveMaximum": 1e16, "multipleOf": 0.01}, MONEY_TEXT, "12500.00"),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.", examples=["EUR"])]
DECIMAL_TEXT = r"^-?[0-9]+(\.[0-9]+)?$"
DecimalText = Annotated[
    Decimal, WithJsonSchema({"type": "string", "pattern": DECIMAL_TEXT, "examples": ["12500.00"]}, mode="serialization")
]
"""A decimal in an answer: a string such as `12500.00` (exact, unlike a JSON number)."""


Tag = Annotated[str, Field(min_length=1, max_length=50)]
PROBABILITY_TEXT = r"^(0(\.[0-9]{1,3})?|1(\.0{1,3})?)$"
Probability = Annotated[
    Decimal,
    BeforeValidator(decimal_text(PROBABILITY_TEXT, "0.25")),
    Field(ge=0, le=1, max_digits=4, decimal_places=3),
    decimal_input_schema({"minimum": 0, "maximum": 1, "multipleOf": 0.001}, PROBABILITY_TEXT, "0.25"),
]


EXAMPLE_IDS = {
    "customer": "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10",
    "lead": "7c1e0f8a-3b5d-4e6f-8a9b-0c1d2e3f4a5b",
    "deal": "3a8b9c0d-1e2f-4a5b-8c6d-7e8f9a0b1c2d",
    "pipeline": "9d7ae5c4-6b4e-5a8d-9c1f-2b3a4c5d6e7f",
    "stage": "1f2e3d4c-5b6a-4978-8a9b-cdef01234567",
    "interaction": "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c",
    "task": "8b7a6f5e-4d3c-4b2a-9180-7f6e5d4c3b2a",
    "campaign": "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
    "member": "6f5e4d3c-2b1a-4098-8f7e-6d5c4b3a2918",
    "document": "4d5e6f7a-8b9c-4d0e-8f1a-2b3c4d5e6f7a",
    "import": "3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b",
}


CustomerIdPath = Annotated[uuid.UUID, id_path("customer", EXAMPLE_IDS["customer"])]
LeadIdPath = Annotated[uuid.UUID, id_path("lead", EXAMPLE_IDS["lead"])]
DealIdPath = Annotated[uuid.UUID, id_path("deal", EXAMPLE_IDS["deal"])]
PipelineIdPath = Annotated[uuid.UUID, id_path("pipeline", EXAMPLE_IDS["pipeline"])]
InteractionIdPath = Annotated[uuid.UUID, id_path("interaction", EXAMPLE_IDS["interaction"])]
TaskIdPath = Annotated[uuid.UUID, id_path("task", EXAMPLE_IDS["task"])]
CampaignIdPath = Annotated[uuid.UUID, id_path("campaign", EXAMPLE_IDS["campaign"])]
MemberIdPath = Annotated[uuid.UUID, id_path("member", EXAMPLE_IDS["member"])]
DocumentIdPath = Annotated[uuid.UUID, id_path("document", EXAMPLE_IDS["document"])]
