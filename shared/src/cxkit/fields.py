"""The input vocabulary both services share: what a time, a date and an integer are in a
request or an event (JSON Schema's meaning, not pydantic's lax one), and the JSON Schema rules
a model states about which of its fields must be sent."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

_RFC3339_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")
_RFC3339_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def json_integer(value: Any) -> Any:
    """JSON Schema's integer: a whole number (2.0 included), never `true` or `"2"`, which
    pydantic's lax mode would take."""
    if isinstance(value, (bool, str)):
        raise ValueError("Input should be a valid integer")
    return value


JsonInteger = BeforeValidator(json_integer)
"""Put after the bounds: `Annotated[int, Field(ge=0), JsonInteger] | None` (bounds after it are lost from the JSON Schema)."""
Integer = Annotated[int, JsonInteger]


def in_utc(value: dt.datetime) -> dt.datetime:
    """Aware times are stored in UTC; one that leaves the calendar when shifted is invalid."""
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


def rfc3339_time(value: Any) -> Any:
    """Only RFC 3339 text is a time here: pydantic would also read a number (`0.5`, `20260101`)
    as seconds since 1970."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _RFC3339_TIME.fullmatch(value):
        raise ValueError("an RFC 3339 time with an offset, e.g. 2026-11-23T10:00:00Z")
    return value


def rfc3339_date(value: Any) -> Any:
    """Only `YYYY-MM-DD` is a date here: pydantic would also read a number of seconds, or a
    midnight time."""
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _RFC3339_DATE.fullmatch(value):
        raise ValueError("a date written YYYY-MM-DD")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(rfc3339_time), AfterValidator(in_utc)]
"""A time with an offset, written as RFC 3339 text, kept in UTC."""
Day = Annotated[dt.date, BeforeValidator(rfc3339_date)]


class _RFC3339Text:
    """`rfc3339_time` and `AwareDatetime` as one pydantic-core schema: no Python call per value."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        text = core_schema.str_schema(pattern=f"^(?:{_RFC3339_TIME.pattern})$", strict=True)
        return core_schema.union_schema(
            [
                core_schema.datetime_schema(strict=True, tz_constraint="aware"),  # made in code
                core_schema.chain_schema([text, core_schema.datetime_schema(tz_constraint="aware")]),  # sent
            ],
            mode="left_to_right",
            custom_error_type="rfc3339_time",
            custom_error_message="Input should be an RFC 3339 time with an offset, e.g. 2026-11-23T10:00:00Z",
        )

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time"}


TimestampAsSent = Annotated[dt.datetime, _RFC3339Text()]
"""A time with an offset, written as RFC 3339 text, as `Timestamp`, but kept with the offset it
was sent with (a decoded event encodes to what was sent) and checked without a Python call
(events are decoded on the consumers' hot path)."""


def present(name: str) -> dict[str, Any]:
    """JSON Schema: `name` is sent, and not as null."""
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def exactly_one_of(*names: str) -> dict[str, Any]:
    """Model `json_schema_extra` for "give exactly one of these"."""
    return {"oneOf": [present(n) for n in names]}


def at_least_one_of(*names: str) -> dict[str, Any]:
    """Model `json_schema_extra` for "give one of these (or more)"."""
    return {"anyOf": [present(n) for n in names]}


def not_both(first: str, second: str) -> dict[str, Any]:
    """Model `json_schema_extra` for "one of these, the other or neither, not both"."""
    return {"not": {"allOf": [present(first), present(second)]}}


def without_null(properties: dict[str, Any], names: tuple[str, ...]) -> None:
    """In a PATCH body's JSON Schema, the fields `names` (which may be left out but not sent as
    null) lose their null branch and their `null` default."""
    for name in names:
        prop: JsonSchemaValue = properties[name]
        prop.pop("default", None)
        branches = [b for b in prop.get("anyOf", ()) if b != {"type": "null"}]
        if len(branches) == 1:
            del prop["anyOf"]
            prop.update(branches[0])
        elif branches:
            prop["anyOf"] = branches
