"""Input field types the CEM's schemas share: strings PostgreSQL can store, slugs, UTC times."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Header, Path, Query
from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

from cxkit.http.problems import Unprocessable


def _storable(value: str) -> str:
    # PostgreSQL text and JSONB cannot hold NUL; refuse it here instead of failing at INSERT.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _to_utc(value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


NoNul = AfterValidator(_storable)
"""Put after any StringConstraints (constraints placed after a validator do not see stripped text)."""

Text = Annotated[str, NoNul]
"""Free text (no NUL characters)."""

QueryText = Annotated[str, NoNul]
"""A text query parameter (`Annotated[QueryText | None, Query(...)]`): PostgreSQL cannot compare NUL either."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
"""A display name: 1-200 characters after trimming."""

Slug = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
"""A lower-case key such as `checkout` or `support_ticket_closed`."""

UTCTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An RFC 3339 time with an offset, normalised to UTC (a time without offset is refused)."""

Channel = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_.-]*$", examples=["email"])]
"""Where something happened: web, store, phone, email, app, chat, social..."""


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
    UTCTime | None,
    Query(
        alias="from", description="Start of the window, inclusive (RFC 3339 with an offset).", examples=["2026-11-01T00:00:00Z"]
    ),
]
To = Annotated[
    UTCTime | None,
    Query(alias="to", description="End of the window, exclusive (RFC 3339 with an offset).", examples=["2026-12-01T00:00:00Z"]),
]


def check_window(since: dt.datetime | None, until: dt.datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise field_problem(["query", "to"], "`to` must be after `from`")
