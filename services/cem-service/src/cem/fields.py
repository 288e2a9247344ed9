"""Input field types of the CEM's own domain: names, slugs, channels, and the `from`/`to` window
of its lists and reports. What both services share (no NUL characters, the input and PATCH bases)
is in `cxkit.fields`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Query
from pydantic import Field, StringConstraints

from cxkit.fields import NoNul, Timestamp
from cxkit.http.problems import field_problem

# Clocks of API clients drift a little; a time "from the future" beyond this (an answer's
# `submitted_at`, feedback's `received_at`) is refused.
CLOCK_SKEW = dt.timedelta(minutes=5)


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
"""A display name: 1-200 characters after trimming."""

Slug = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
"""A lower-case key such as `checkout` or `support_ticket_closed`."""

Channel = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_.-]*$", examples=["email"])]
"""Where something happened: web, store, phone, email, app, chat, social..."""


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
    """A 422 unless the window's end is after its start."""
    if since is not None and until is not None and since >= until:
        raise field_problem(["query", "to"], "`to` must be after `from`")
