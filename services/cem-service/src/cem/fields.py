"""Input field types the CEM's schemas share: strings PostgreSQL can store, slugs, UTC times."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

from fastapi import Header, Path, Query
from pydantic import (
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from cxkit.fields import Timestamp, without_null
from cxkit.http.problems import Unprocessable

# Clocks of API clients drift a little; a time "from the future" beyond this (an answer's
# `submitted_at`, feedback's `received_at`) is refused.
CLOCK_SKEW = dt.timedelta(minutes=5)


def _storable(value: str) -> str:
    # PostgreSQL text and JSONB cannot hold NUL; refuse it here instead of failing at INSERT.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# JSON Schema patterns (ECMA 262) for what _NoNul enforces. "Blank" is what str.strip() removes,
# which is not quite ECMA's \s (it also takes \x1c-\x1f and \x85, and leaves \ufeff).
NO_NUL = "^[^\\u0000]*$"
_KEPT_BY_STRIP = "[^\\u0000\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
NOT_BLANK_NO_NUL = f"^[^\\u0000]*{_KEPT_BY_STRIP}[^\\u0000]*$"


class _NoNul:
    """Refuses NUL characters, and says so in the JSON Schema with a pattern (one that also asks
    for a non-blank character when the text is stripped and may not be empty)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_storable, handler(source))

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
"""Free text (no NUL characters)."""

QueryText = Annotated[str, NoNul]
"""A text query parameter (`Annotated[QueryText | None, Query(...)]`): PostgreSQL cannot compare NUL either."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
"""A display name: 1-200 characters after trimming."""

Slug = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
"""A lower-case key such as `checkout` or `support_ticket_closed`."""

Channel = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_.-]*$", examples=["email"])]
"""Where something happened: web, store, phone, email, app, chat, social..."""


class PatchBody(BaseModel):
    """A PATCH body: only the fields sent change, and null clears an optional field. The fields
    named in `not_null` always have a value: the service refuses null for them, and the OpenAPI
    document shows them without a null branch (and without the `null` default)."""

    not_null: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        without_null(handler.resolve_ref_schema(json_schema).get("properties", {}), cls.not_null)
        return json_schema


def field_problem(loc: list[str | int], msg: str, kind: str = "value_error") -> Unprocessable:
    """A 422 problem naming the field at fault, shaped like request-validation errors."""
    return Unprocessable(f"{'.'.join(str(p) for p in loc)}: {msg}", errors=[{"loc": loc, "msg": msg, "type": kind}])


def id_path(what: str, example: str) -> Any:
    """A UUID path parameter with its description and an example for the OpenAPI document."""
    return Path(description=f"The {what}'s id.", examples=[example])


IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=200,
        description='The `ETag` you last read (e.g. `"3"`); the write is refused with 412 if the resource changed since.',
        examples=['"1"'],
    ),
]


From = Annotated[
    Timestamp | None,
    Query(
        alias="from", description="Start of the window, inclusive (RFC 3339 with an offset).", examples=["2026-11-01T00:00:00Z"]
    ),
]
To = Annotated[
    Timestamp | None,
    Query(alias="to", description="End of the window, exclusive (RFC 3339 with an offset).", examples=["2026-12-01T00:00:00Z"]),
]


def check_window(since: dt.datetime | None, until: dt.datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise field_problem(["query", "to"], "`to` must be after `from`")
