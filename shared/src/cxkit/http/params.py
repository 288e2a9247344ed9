"""Request parameters every resource's routes declare the same way: its id in the path, and
the `If-Match` header of a conditional write (checked by `cxkit.http.etag.check_if_match`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path


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
