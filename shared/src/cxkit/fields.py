"""The input vocabulary both services share: what a time, a date and an integer are in a
request or an event (JSON Schema's meaning, not pydantic's lax one), text PostgreSQL can store
(no NUL character), the base of request bodies and PATCH bodies, and the JSON Schema rules a
model states about which of its fields must be sent."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

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

# The range of a time that a client or another system gives and that both services store and
# compute with: when an interaction occurred (the CEM adds a survey's delay and an invitation's
# lifetime to it). One rule for the CRM's API and for both services' consumers, so an event one
# service applies is never refused by the other.
EARLIEST_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
TIME_LIMIT = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
TIME_RANGE = "at 0001-01-01T00:00:00Z or later and before 9000-01-01T00:00:00Z"
_OUT_OF_RANGE = f"Input should be {TIME_RANGE}"


def in_time_range(value: dt.datetime) -> dt.datetime:
    """`value` if it lies in TIME_RANGE (an aware time, compared as the instant it names)."""
    if not EARLIEST_TIME <= value < TIME_LIMIT:
        raise PydanticCustomError("time_range", _OUT_OF_RANGE)
    return value


EventTime = Annotated[Timestamp, AfterValidator(in_time_range)]
"""A `Timestamp` within TIME_RANGE (see `in_time_range`)."""
Day = Annotated[dt.date, BeforeValidator(rfc3339_date)]

MAX_JSON_BYTES = 16 * 1024
"""The most bytes of free JSON (a customer's attributes, an interaction's metadata) once written
as JSON: the CRM's API refuses more, and so do both services' consumers in an interaction."""


class _RFC3339Text:
    """`rfc3339_time` and `AwareDatetime` as one pydantic-core schema: no Python call per value.
    With `in_range`, the time must also be in TIME_RANGE (`in_time_range`, also without a call)."""

    def __init__(self, *, in_range: bool = False) -> None:
        self.in_range = in_range

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        text = core_schema.str_schema(pattern=f"^(?:{_RFC3339_TIME.pattern})$", strict=True)
        time = core_schema.union_schema(
            [
                core_schema.datetime_schema(strict=True, tz_constraint="aware"),  # made in code
                core_schema.chain_schema([text, core_schema.datetime_schema(tz_constraint="aware")]),  # sent
            ],
            mode="left_to_right",
            custom_error_type="rfc3339_time",
            custom_error_message="Input should be an RFC 3339 time with an offset, e.g. 2026-11-23T10:00:00Z",
        )
        if not self.in_range:
            return time
        # pydantic-core compares aware times as the instants they name, whatever their offsets.
        bounds = core_schema.datetime_schema(strict=True, ge=EARLIEST_TIME, lt=TIME_LIMIT)
        ranged = core_schema.custom_error_schema(bounds, custom_error_type="time_range", custom_error_message=_OUT_OF_RANGE)
        return core_schema.chain_schema([time, ranged])

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time"}


TimestampAsSent = Annotated[dt.datetime, _RFC3339Text()]
"""A time with an offset, written as RFC 3339 text, as `Timestamp`, but kept with the offset it
was sent with (a decoded event encodes to what was sent) and checked without a Python call
(events are decoded on the consumers' hot path)."""
EventTimeAsSent = Annotated[dt.datetime, _RFC3339Text(in_range=True)]
"""A `TimestampAsSent` within TIME_RANGE: `EventTime` as an event carries it."""


def address_key(email: str) -> str:
    """The key an email address is unique on and found by, in both services (the CRM's
    `email_normalized`, the CEM's `email_lower`): computed here and only here, in Python, and
    passed to SQL as a value or stored with the row. Never PostgreSQL's lower(): it folds some
    letters otherwise ('İ' to 'i' where Python gives 'i' and a combining dot; a capital sigma
    ending a word to U+03C3 where Python gives the final sigma U+03C2), so a key made by one is
    not found by the other, and an address could be taken twice or outlive an erasure."""
    return email.strip().lower()


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


# Text PostgreSQL can store: its text and JSONB types cannot hold a NUL character, so one is
# refused at the edge (a 422) instead of failing at INSERT (a 500). Nor can text that is not
# Unicode: a lone UTF-16 surrogate (JSON's `"\\udc00"`, which json.loads takes) cannot be written
# as UTF-8, and orjson refuses it when the row or the answer is written. pydantic refuses it in a
# string with constraints (`string_unicode`), never in a plain one; both are refused here alike.

NO_NUL = "^[^\\u0000]*$"
"""JSON Schema (ECMA 262) for "no NUL character"."""
# "Blank" is what str.strip() removes, which is not quite ECMA's \s (it also takes \x1c-\x1f and
# \x85, and leaves \ufeff).
_KEPT_BY_STRIP = "[^\\u0000\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
NOT_BLANK_NO_NUL = f"^[^\\u0000]*{_KEPT_BY_STRIP}[^\\u0000]*$"
"""JSON Schema for "no NUL character, and one that stripping keeps"."""
NUL_REFUSED = "must not contain NUL characters"
SURROGATE_REFUSED = "must not contain unpaired surrogates (not valid Unicode)"
# A Python str holds an astral character as one code point, so any surrogate in one is unpaired
# (json.loads joins an escaped pair). A pattern cannot say this in JSON Schema: ECMA 262 sees a
# string as UTF-16 units, where every astral character is a pair of surrogates.
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store `text` (NUL_REFUSED, SURROGATE_REFUSED), or None. ASCII text
    (the common case) costs a flag test and a `in`."""
    if "\x00" in text:
        return NUL_REFUSED
    if not text.isascii() and _SURROGATE.search(text):
        return SURROGATE_REFUSED
    return None


def _nul_problem(text: str) -> str | None:
    return NUL_REFUSED if "\x00" in text else None


class _BadKey:
    """On `_first_at`'s stack: the dict at this path has a key with `problem`."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _first_at(value: Any, problem: Callable[[str], str | None]) -> tuple[list[str | int], str] | None:
    """The path to the first string (in document order) that has a `problem`, and that problem:
    see `nul_at`."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            found = problem(node)
            if found is not None:
                return path, found
        elif isinstance(node, _BadKey):
            return path, node.problem
        elif isinstance(node, dict):
            children: list[tuple[Any, list[str | int]]] = []
            for key, item in node.items():
                if isinstance(key, str) and (found := problem(key)) is not None:
                    children.append((_BadKey(found), path))  # after the values before it
                    break
                children.append((item, [*path, key]))
            stack.extend(reversed(children))  # in document order
        elif isinstance(node, list):
            stack.extend((item, [*path, index]) for index, item in reversed(list(enumerate(node))))
    return None


def nul_at(value: Any) -> list[str | int] | None:
    """Where the first NUL character is, or None: the keys and indexes down to the string that
    holds one (down to the dict, for a key that holds one); `[]` for the value itself. Any depth:
    the walk keeps its own stack (a NUL 30 levels down in free JSON reached PostgreSQL before)."""
    if not _holds_nul(value):
        return None
    found = _first_at(value, _nul_problem)
    return found[0] if found is not None else None


def unstorable_text_at(value: Any) -> tuple[list[str | int], str] | None:
    """Where the first string PostgreSQL cannot store is (as `nul_at` tells), with why
    (`text_problem`), or None: a NUL character or an unpaired surrogate, in a value or a key."""
    if not _holds_unstorable_text(value):
        return None
    return _first_at(value, text_problem)


def _holds_nul(value: Any) -> bool:
    """Whether a NUL is anywhere in `value` (the common answer, no: no paths are built)."""
    if isinstance(value, str):
        return "\x00" in value
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return True
            if isinstance(item, str):
                if "\x00" in item:
                    return True
            elif isinstance(item, (dict, list)):
                stack.append(item)
    return False


def _holds_unstorable_text(value: Any) -> bool:
    """`_holds_nul` for both of `text_problem`'s reasons, inlined (it runs on every body)."""
    if isinstance(value, str):
        return text_problem(value) is not None
    surrogate = _SURROGATE.search
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, item in items:
            if isinstance(key, str) and ("\x00" in key or (not key.isascii() and surrogate(key))):
                return True
            if isinstance(item, str):
                if "\x00" in item or (not item.isascii() and surrogate(item)):
                    return True
            elif isinstance(item, (dict, list)):
                stack.append(item)
    return False


def has_nul(value: Any) -> bool:
    """A NUL character in a string, or in any key or value of nested dicts and lists."""
    return _holds_nul(value)


def no_nul(value: str) -> str:
    """`value`, if PostgreSQL can store it: no NUL character, no unpaired surrogate."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def forbid_nul(schema: dict[str, Any]) -> None:
    """Write into a JSON Schema what InputModel enforces: no free-text string holds NUL. Strings
    with a pattern, format or fixed values cannot hold one anyway."""
    if schema.get("type") == "string" and not {"pattern", "format", "enum", "const"} & schema.keys():
        schema["pattern"] = NO_NUL
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, ()):
            forbid_nul(branch)
    for prop in schema.get("properties", {}).values():
        forbid_nul(prop)
    for key in ("items", "additionalProperties", "propertyNames"):
        if isinstance(schema.get(key), dict):
            forbid_nul(schema[key])


class _NoNul:
    """Refuses NUL characters (and unpaired surrogates, see `text_problem`), and says so in the
    JSON Schema with a pattern (one that also asks for a non-blank character when the text is
    stripped and may not be empty)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(no_nul, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        text: Any = schema
        while text.get("type") != "str" and "schema" in text:  # under the validators (and constraints)
            text = text["schema"]
        if json_schema.get("type") == "string" and "pattern" not in json_schema:
            stripped_not_empty = text.get("strip_whitespace") and text.get("min_length", 0) >= 1
            json_schema["pattern"] = NOT_BLANK_NO_NUL if stripped_not_empty else NO_NUL
        return json_schema


NoNul = _NoNul()
"""Put after any StringConstraints (constraints placed after a validator do not see stripped text)."""

Text = Annotated[str, NoNul]
"""Free text (no NUL characters, no unpaired surrogates)."""

QueryText = Text
"""A text query parameter (`Annotated[QueryText | None, Query(...)]`): PostgreSQL cannot compare
NUL either."""


class InputModel(BaseModel):
    """Base of request bodies: unknown fields refused (nobody sets `id` or `version` by sending
    them), no NUL characters anywhere (and the OpenAPI document says so with a pattern on every
    free-text string), nor unpaired surrogates (`text_problem`), in any field, key or free JSON."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        found = unstorable_text_at(data)
        if found is None:
            return data
        # The error names the field that holds the text (`body.answers.why`), as NoNul's would.
        at, problem = found
        value = data
        for step in at:
            value = value[step]
        error = InitErrorDetails(type="value_error", loc=tuple(at), input=value, ctx={"error": ValueError(problem)})
        raise ValidationError.from_exception_data(cls.__name__, [error])

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        forbid_nul(handler.resolve_ref_schema(json_schema))
        return json_schema


class PatchModel(InputModel):
    """A PATCH body: only the fields sent change, and `null` clears an optional field. The fields
    named in `not_null` always have a value: they may be left out but not sent as null, and the
    OpenAPI document shows them without a null branch (and without the `null` default)."""

    not_null: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _refuse_null(self) -> Any:
        nulled = [f for f in self.not_null if f in self.model_fields_set and getattr(self, f) is None]
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = super().__get_pydantic_json_schema__(core_schema, handler)
        without_null(handler.resolve_ref_schema(json_schema).get("properties", {}), cls.not_null)
        return json_schema
