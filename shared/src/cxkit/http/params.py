"""Request parameters every resource's routes declare the same way: its id in the path, the
`If-Match` header of a conditional write (checked by `cxkit.http.etag.check_if_match`), and a
list's window of last changes (`updated_from`, `updated_to`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query

from cxkit.db import window_conditions
from cxkit.fields import Timestamp
from cxkit.http.problems import field_problem


def id_path(kind: str, example: str) -> Any:
    """A path id (`Annotated[uuid.UUID, id_path("survey", "2f4e...")]`) with its description and
    an example, so every operation's parameters carry one in the docs."""
    return Path(description=f"The {kind}'s id.", examples=[example])


IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=200,
        description='The `ETag` you last read (e.g. `"3"`); the write is refused with 412 if the resource changed since.',
        examples=['"1"'],
    ),
]


@dataclass(frozen=True, slots=True)
class ChangedWindow:
    """`updated_from` (inclusive) and `updated_to` (exclusive): the rows last changed in that
    window. With `sort=updated_at`, page by page, what changed since a moment (a sync)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def conditions(self, updated_at: Any) -> list[Any]:
        """The WHERE conditions on the table's `updated_at` column (none for an open window)."""
        return window_conditions(updated_at, self.since, self.until)


ANY_TIME = ChangedWindow()  # no window (frozen: one instance serves every default)


async def changed_window(
    updated_from: Annotated[
        Timestamp | None, Query(description="Last changed at or after (RFC 3339): with `sort=updated_at`, what changed since.")
    ] = None,
    updated_to: Annotated[Timestamp | None, Query(description="Last changed before (RFC 3339).")] = None,
) -> ChangedWindow:
    """The list's `updated_from`/`updated_to`; an empty window is a 422 naming `updated_to`."""
    if updated_from is not None and updated_to is not None and updated_from >= updated_to:
        raise field_problem(["query", "updated_to"], "updated_from must be before updated_to")
    return ChangedWindow(updated_from, updated_to)


ChangedDep = Annotated[ChangedWindow, Depends(changed_window)]
# What a list's description says of the window.
SYNC_TEXT = (
    "What changed since a moment: `updated_from=<moment>&sort=updated_at` (`updated_to`, exclusive, ends the window), "
    "page by page; merges, erasures and deleted references change `updated_at` too."
)
